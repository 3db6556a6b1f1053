// The package is dotted identifiers, as in protobuf's `package store.v1;`.
#[rpc_core::service(package = "store..v1")]
pub trait A {
    async fn ping(&self);
}

#[rpc_core::service(package = "1store")]
pub trait B {
    async fn ping(&self);
}

#[rpc_core::service(package = "store/v1")]
pub trait C {
    async fn ping(&self);
}

#[rpc_core::service(package = store.v1)]
pub trait D {
    async fn ping(&self);
}

#[rpc_core::service(package = "a", package = "b")]
pub trait E {
    async fn ping(&self);
}

#[rpc_core::service(packge = "store.v1")]
pub trait F {
    async fn ping(&self);
}

fn main() {}
