//! A server-streaming subscription: a log service that streams the lines matching a filter as
//! they are written, to any number of subscribers, each at its own pace.
//!
//! ```text
//! cargo run --release --example subscription
//! ```
//!
//! One process: the server on 127.0.0.1, a writer appending lines, two subscribers with
//! different filters. The subscriber's token travels as call metadata; the server refuses a
//! subscription without one, with a typed error. A subscriber that goes away (drops its stream)
//! cancels its call, and the server drops the method's future.

use std::sync::Arc;
use std::time::Duration;

use rpc_core::transport::tcp::TcpAcceptor;
use rpc_core::codec::{Decode, Postcard};
use rpc_core::{CallContext, CallError, CallOptions, Client, ClientConfig, Code, Server, Sink};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// One log line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Line {
    pub seq: u64,
    pub level: String,
    pub text: String,
}

/// Why a subscription was refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum LogError {
    Unauthenticated,
    /// The subscriber fell so far behind that lines were dropped for it.
    Lagged { missed: u64 },
}

#[rpc_core::service]
pub trait Logs {
    /// Streams every new line whose level is `level` (or every line for `"*"`).
    async fn tail(&self, ctx: CallContext, level: String, out: Sink<Line>) -> Result<(), LogError>;
}

/// The service: new lines arrive on a broadcast channel; each subscription is one receiver.
struct LogService {
    lines: broadcast::Sender<Line>,
}

impl Logs for LogService {
    async fn tail(&self, ctx: CallContext, level: String, mut out: Sink<Line>) -> Result<(), LogError> {
        if ctx.metadata.get_str("authorization") != Some("Bearer demo-token") {
            return Err(LogError::Unauthenticated);
        }
        println!("server: {} subscribed to {level:?}", ctx.peer);
        let mut lines = self.lines.subscribe();
        loop {
            let line = match lines.recv().await {
                Ok(line) => line,
                Err(broadcast::error::RecvError::Lagged(missed)) => return Err(LogError::Lagged { missed }),
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            };
            if level == "*" || line.level == level {
                // Waits while the subscriber's window is full (flow control). A subscriber that
                // went away cancelled the call: this future is dropped (or, racing that, the
                // send fails).
                if out.send(line).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

/// A log service streaming the lines that match a filter to two subscribers, one process on
/// 127.0.0.1; a subscriber's bearer token travels as call metadata. No options.
#[derive(Debug, clap::Parser)]
#[command(after_help = "Examples:\n  cargo run --release --example subscription")]
struct Args {}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Args {} = clap::Parser::parse();
    let (lines, _) = broadcast::channel(1024);
    let service = LogService { lines: lines.clone() };
    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await?;
    let addr = acceptor.local_addr()?;
    let server = Server::builder().build(LogsServer::new(service)).serve(acceptor);

    // The writer: a line every few milliseconds, one in five an error.
    let writer = tokio::spawn(async move {
        for seq in 0.. {
            let level = if seq % 5 == 0 { "error" } else { "info" };
            let _ = lines.send(Line { seq, level: level.into(), text: format!("event {seq}") });
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });

    let client = Arc::new(LogsClient::new(Client::connect_tcp(addr, ClientConfig::default()).await?));
    // Without a token: refused. A streaming method's error arrives as the application-error
    // status at the end of the stream, its details the encoded `LogError`.
    let refused = match client.tail("*".into()).await?.recv().await {
        Some(Err(CallError::Status(s))) if s.code == Code::APPLICATION => <Postcard as Decode<LogError>>::decode(s.details)?,
        other => return Err(format!("expected a refusal, got {other:?}").into()),
    };
    println!("client: without a token: {refused:?}");

    let authed = client.with_options(CallOptions::default().header("authorization", "Bearer demo-token")?);
    let mut errors = authed.tail("error".into()).await?;
    let mut everything = authed.tail("*".into()).await?;
    for _ in 0..5 {
        let line = errors.recv().await.ok_or("the error stream ended")??;
        println!("client: errors   got #{:<4} {:<5} {}", line.seq, line.level, line.text);
    }
    drop(errors); // cancels that subscription on the server
    for _ in 0..5 {
        let line = everything.recv().await.ok_or("the stream ended")??;
        println!("client: everything got #{:<4} {:<5} {}", line.seq, line.level, line.text);
    }
    drop(everything);
    tokio::time::sleep(Duration::from_millis(50)).await;
    writer.abort();
    server.shutdown().await;
    Ok(())
}
