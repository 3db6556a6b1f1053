use rpc_core::{Payload, Sink, Source};

// A `Payload` is an attachment only as a whole argument or result: inside another type it
// would go through postcard, which cannot encode it.
#[rpc_core::service]
pub trait Blobs {
    async fn put_many(&self, parts: Vec<Payload>) -> u64;
    async fn maybe(&self, key: String) -> Option<Payload>;
    async fn feed(&self, out: Sink<Payload>);
    async fn take(&self, input: Source<(u32, Payload)>) -> u64;
}

fn main() {}
