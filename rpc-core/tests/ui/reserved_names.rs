#[rpc_core::service]
pub trait Store {
    async fn new(&self);
    async fn client(&self) -> u64;
    async fn methods(&self);
}

fn main() {}
