#[rpc_core::service]
pub trait Store<K> {
    async fn get(&self, key: K) -> u64;
}

#[rpc_core::service]
pub trait Bounded
where
    Self: Sized,
{
    async fn ping(&self);
}

fn main() {}
