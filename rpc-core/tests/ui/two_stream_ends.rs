use rpc_core::{Sink, Source};

// A call has one stream each way: a second `Sink` or `Source` is an error.
#[rpc_core::service]
pub trait Feed {
    async fn two_sinks(&self, a: Sink<u32>, b: Sink<u32>);
    async fn two_sources(&self, a: Source<u32>, b: rpc_core::Source<u8>) -> u64;
}

fn main() {}
