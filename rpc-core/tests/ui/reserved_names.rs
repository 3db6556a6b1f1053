#[rpc_core::service]
pub trait Store {
    async fn new(&self);
    async fn client(&self) -> u64;
    async fn methods(&self);
    async fn paths(&self);
    async fn path_of(&self);
    // `get`'s path constant is `GET_PATH`, the id constant of `get_path`.
    async fn get(&self);
    async fn get_path(&self);
}

fn main() {}
