//! A service generated with `call_context(true)`: its methods see the request's metadata and
//! the caller's address, and set response headers, as a `#[service]` method taking a
//! `CallContext` does.

use rpc_core::transport::tcp::TcpAcceptor;
use rpc_core::{CallContext, CallOptions, Client, ClientConfig, Server, Status};
use zcrpc_proto::context::{Answer, Question, Whoami, WhoamiClient, WhoamiServer};

struct Me;

impl Whoami for Me {
    async fn ask(&self, ctx: CallContext, request: Question) -> Result<Answer, Status> {
        let name = ctx.metadata.get_str("name").ok_or_else(|| Status::invalid_argument("no name header"))?;
        ctx.set_header("answered-by", "me").map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Answer { text: format!("{name} asked {:?} from {}", request.text, ctx.peer) })
    }
}

#[tokio::test]
async fn a_method_sees_its_calls_metadata_and_peer_and_sets_response_headers() {
    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let handle = Server::builder().build(WhoamiServer::new(Me)).serve(acceptor);
    let client = WhoamiClient::new(Client::connect_tcp(addr, ClientConfig::default()).await.unwrap());

    let err = client.ask(Question { text: "?".into() }).await.unwrap_err();
    assert!(err.to_string().contains("no name header"), "{err}");

    let named = client.with_options(CallOptions::default().header("name", "ada").unwrap());
    let reply = named.ask_with_metadata(Question { text: "who".into() }).await;
    let answer = reply.result.unwrap();
    assert!(answer.text.starts_with("ada asked \"who\" from 127.0.0.1:"), "{}", answer.text);
    assert_eq!(reply.headers.get_str("answered-by"), Some("me"));
    drop(client);
    drop(named);
    handle.shutdown().await;
}
