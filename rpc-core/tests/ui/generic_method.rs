#[rpc_core::service]
pub trait Store {
    async fn get<K: serde::Serialize>(&self, key: K) -> u64;
    async fn put(&self, key: String) -> u64
    where
        String: Clone;
}

fn main() {}
