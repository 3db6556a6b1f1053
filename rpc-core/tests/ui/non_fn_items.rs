#[rpc_core::service]
pub trait Store {
    const LIMIT: usize;
    type Key;
    async fn ping(&self);
}

fn main() {}
