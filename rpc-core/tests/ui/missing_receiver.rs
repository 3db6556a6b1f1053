#[rpc_core::service]
pub trait Store {
    async fn get(key: String) -> u64;
    async fn ping();
}

fn main() {}
