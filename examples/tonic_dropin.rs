//! A tonic service, unchanged, served and called over zcrpc: tonic's own "helloworld" (its
//! `helloworld-server` and `helloworld-client`, in one program), where only the two lines that
//! serve the service and make the channel changed — each marked `// CHANGED:` with the line
//! it replaces. Everything else, the `.proto`, the code tonic generates from it, `MyGreeter`,
//! the generated `GreeterClient` and its call, is tonic's code as it was. No HTTP/2 is spoken:
//! each call is a zcrpc call (rpc-tonic's level 2).
//!
//! ```sh
//! cargo run --example tonic_dropin
//! ```

use rpc_core::transport::tcp::TcpAcceptor;
use tonic::{Request, Response, Status};

use hello_world::greeter_client::GreeterClient;
use hello_world::greeter_server::{Greeter, GreeterServer};
use hello_world::{HelloReply, HelloRequest};

#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod hello_world {
    tonic::include_proto!("helloworld");
}

#[derive(Debug, Default)]
pub struct MyGreeter {}

#[tonic::async_trait]
impl Greeter for MyGreeter {
    async fn say_hello(&self, request: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        println!("Got a request from {:?}", request.remote_addr());

        let reply = HelloReply { message: format!("Hello {}!", request.into_inner().name) };
        Ok(Response::new(reply))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // tonic's example listens on [::1]:50051; here the system picks a free port.
    let greeter = MyGreeter::default();
    let acceptor = TcpAcceptor::bind("[::1]:0").await?;
    let addr = acceptor.local_addr()?;
    println!("GreeterServer listening on {addr}");

    // CHANGED: was `Server::builder().add_service(GreeterServer::new(greeter)).serve(addr).await?;`
    let _server = rpc_tonic::Server::builder().add_service(GreeterServer::new(greeter)).serve(acceptor);

    // CHANGED: was `let mut client = GreeterClient::connect("http://[::1]:50051").await?;`
    let mut client = GreeterClient::new(rpc_tonic::Channel::connect_tcp(addr).await?);

    for name in ["Tonic", "zcrpc"] {
        let request = tonic::Request::new(HelloRequest { name: name.into() });

        let response = client.say_hello(request).await?;

        println!("RESPONSE={:?}", response.into_inner().message);
    }
    Ok(())
}
