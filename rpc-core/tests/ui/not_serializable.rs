pub struct Opaque;

#[rpc_core::service]
pub trait Store {
    async fn put(&self, key: Opaque);
    async fn get(&self) -> Opaque;
    async fn both(&self, n: u32, key: Opaque) -> Result<u32, Opaque>;
}

fn main() {}
