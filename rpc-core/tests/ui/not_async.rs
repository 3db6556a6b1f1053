#[rpc_core::service]
pub trait Store {
    fn get(&self, key: String) -> u64;
}

fn main() {}
