use rpc_core::{Payload, Sink, Source};

#[derive(serde::Serialize, serde::Deserialize)]
pub struct E;

// A server-streaming or bidirectional method sends its answers into its `Sink`: it returns
// `()` or `Result<(), E>`. (A client-streaming one returns a value, like a unary method.)
#[rpc_core::service]
pub trait Feed {
    async fn ticks(&self, out: Sink<u32>) -> u64;
    async fn chat(&self, input: Source<u32>, output: Sink<u32>) -> Result<Payload, E>;
    async fn fine(&self, out: Sink<u32>) -> Result<(), E>;
    async fn upload(&self, items: Source<u32>) -> Result<u64, E>;
}

fn main() {}
