#[rpc_core::service]
pub struct Store {
    key: String,
}

fn main() {}
