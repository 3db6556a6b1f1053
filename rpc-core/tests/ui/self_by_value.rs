#[rpc_core::service]
pub trait Store {
    async fn get(self, key: String) -> u64;
    async fn put(mut self, key: String);
}

fn main() {}
