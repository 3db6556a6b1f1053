#[rpc_core::service]
pub trait Store {
    #[method(id = 4294967296)]
    async fn big(&self);
    #[method(name = "other")]
    async fn named(&self);
    #[method(id = 3, extra)]
    async fn extra(&self);
}

#[rpc_core::service(Store)]
pub trait WithArgs {
    async fn ping(&self);
}

fn main() {}
