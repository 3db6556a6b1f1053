#[rpc_core::service]
pub trait Store {
    async fn ping(&self) {}
}

fn main() {}
