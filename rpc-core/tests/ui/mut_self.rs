#[rpc_core::service]
pub trait Store {
    async fn put(&mut self, key: String, value: u64);
}

fn main() {}
