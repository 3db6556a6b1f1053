#[rpc_core::service]
pub trait Math {
    async fn add(&self, (a, b): (u32, u32)) -> u32;
    async fn ignore(&self, _: u32);
    async fn by_ref(&self, ref name: String);
}

fn main() {}
