// One trait with several unrelated mistakes: every one is reported in a single build.
#[rpc_core::service]
pub trait Store {
    fn get(&self, key: String) -> u64;
    async fn put(&mut self, key: String, value: u64);
    async fn take(self);
    async fn pick<T>(&self, _: T);
    const N: u32;
}

fn main() {}
