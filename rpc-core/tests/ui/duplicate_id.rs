#[rpc_core::service]
pub trait Store {
    #[method(id = 7)]
    async fn get(&self) -> u64;
    #[method(id = 7)]
    async fn put(&self, value: u64);
    async fn fetch(&self);
    // 0xc6af37bd is FNV-1a of "Store/fetch": pinning it here takes `fetch`'s hashed id.
    #[method(id = 0xc6af37bd)]
    async fn old_fetch(&self);
    #[method(id = 1)]
    #[method(id = 2)]
    async fn twice(&self);
}

#[rpc_core::service]
pub trait Renamed {
    async fn put(&self);
    // `putBlob` and `put_blob` hash differently but both want the constant `PUT_BLOB`.
    #[allow(non_snake_case)]
    async fn putBlob(&self);
    async fn put_blob(&self);
}

fn main() {}
