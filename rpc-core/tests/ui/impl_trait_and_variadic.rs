#[rpc_core::service]
pub trait Store {
    async fn put(&self, key: impl Into<String>);
    async fn list(&self) -> Vec<impl serde::Serialize>;
    async fn get(&self, key: &str) -> u64;
    async fn many(&self, ...);
}

fn main() {}
