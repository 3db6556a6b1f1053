//! A bidirectional stream: a chat room. Each member opens one call; what it sends goes to every
//! member, its own messages included, and what the others send streams back to it.
//!
//! ```text
//! cargo run --release --example chat
//! ```
//!
//! One process: the server on 127.0.0.1 and three members talking at once on one connection. A
//! member leaves by finishing its side of the stream; the server's method then ends its call
//! cleanly.

use std::sync::Arc;

use rpc_core::transport::tcp::TcpAcceptor;
use rpc_core::{CallContext, Client, ClientConfig, Server, Sink, Source};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, Barrier};

/// One chat message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    pub from: String,
    pub text: String,
}

#[rpc_core::service]
pub trait Chat {
    /// Joins the room as `name`: `said` carries what this member says, `heard` what everyone
    /// (this member included) said since it joined.
    async fn join(&self, ctx: CallContext, name: String, said: Source<Message>, heard: Sink<Message>);
}

struct Room {
    messages: broadcast::Sender<Message>,
}

impl Chat for Room {
    async fn join(&self, ctx: CallContext, name: String, mut said: Source<Message>, mut heard: Sink<Message>) {
        println!("server: {name} joined from {}", ctx.peer);
        let mut room = self.messages.subscribe();
        let _ = self.messages.send(Message { from: "room".into(), text: format!("{name} joined") });
        loop {
            tokio::select! {
                // What this member says goes to everyone (the sender is named by the server,
                // not trusted from the message).
                msg = said.recv() => match msg {
                    Some(Ok(m)) => {
                        let _ = self.messages.send(Message { from: name.clone(), text: m.text });
                    }
                    // Finished (or gone): the member left.
                    _ => break,
                },
                // What anyone says goes to this member, at its pace.
                msg = room.recv() => match msg {
                    Ok(m) => {
                        if heard.send(m).await.is_err() {
                            break;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
        let _ = self.messages.send(Message { from: "room".into(), text: format!("{name} left") });
        println!("server: {name} left");
    }
}

/// Lines said in the room, by everyone together.
const LINES: usize = 5;

/// One member: joins, waits until everyone is in the room, says `lines`, and prints everything
/// it hears; once it has heard all [`LINES`] lines of the conversation it leaves, and the server
/// ends its call.
async fn member(
    client: ChatClient,
    name: &'static str,
    lines: &'static [&'static str],
    everyone_in: Arc<Barrier>,
) -> Result<(), rpc_core::CallError> {
    let (mut say, mut hear) = client.join(name.into()).await?;
    // The room announces a member once it listens to the room: from then on it hears everything.
    let joined = format!("{name} joined");
    while let Some(m) = hear.recv().await {
        if m?.text == joined {
            break;
        }
    }
    everyone_in.wait().await;
    for text in lines {
        say.send(Message { from: name.into(), text: (*text).into() }).await?;
    }
    let mut heard = 0;
    while let Some(m) = hear.recv().await {
        let m = m?;
        println!("{name:>6} hears {:>6}: {}", m.from, m.text);
        if m.from != "room" {
            heard += 1;
            if heard == LINES {
                say.finish(); // leave the room
            }
        }
    }
    Ok(())
}

/// A chat room over bidirectional streams: three members talking at once on one connection,
/// one process on 127.0.0.1. No options.
#[derive(Debug, clap::Parser)]
#[command(after_help = "Examples:\n  cargo run --release --example chat")]
struct Args {}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Args {} = clap::Parser::parse();
    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await?;
    let addr = acceptor.local_addr()?;
    let room = Room { messages: broadcast::channel(256).0 };
    let server = Server::builder().build(ChatServer::new(room)).serve(acceptor);

    // All three members share one connection: three calls multiplexed on it.
    let client = ChatClient::new(Client::connect_tcp(addr, ClientConfig::default()).await?);
    let everyone_in = Arc::new(Barrier::new(3));
    let (a, b, c) = tokio::join!(
        member(client.clone(), "ada", &["hello", "anyone streaming genomes?"], everyone_in.clone()),
        member(client.clone(), "bob", &["hi ada", "only model weights today"], everyone_in.clone()),
        member(client.clone(), "cy", &["o/"], everyone_in),
    );
    a?;
    b?;
    c?;
    server.shutdown().await;
    Ok(())
}
