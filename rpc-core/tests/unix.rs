//! The Unix-socket transport: calls, a 32 MiB attachment, streams, peers that vanish, the
//! socket file's life (removed at shutdown, a stale one replaced, a live one or a non-socket
//! left alone with an error naming the path), and errors that name the path.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use rpc_core::transport::unix::{self, UnixAcceptor};
use rpc_core::{CallContext, CallError, Client, ClientConfig, Payload, Reconnect, Server, ServerHandle, Sink, Source};

#[rpc_core::service]
pub trait Files {
    async fn echo(&self, data: Payload) -> Payload;
    /// Who the server sees at the other end.
    async fn whoami(&self, ctx: CallContext) -> String;
    /// `count` chunks of `size` bytes, chunk `i` filled with `i`.
    async fn download(&self, count: u32, size: u32, out: Sink<u32>);
    /// Total attachment bytes received; records how the stream ended.
    async fn upload(&self, chunks: Source<u32>) -> u64;
    /// Never answers (until its caller or connection goes).
    async fn hang(&self);
}

#[derive(Clone, Default)]
struct Impl {
    /// How each upload ended: `None` cleanly, else the error (`"dropped"` when the server
    /// dropped the handler with its connection).
    upload_ends: std::sync::Arc<std::sync::Mutex<Vec<Option<String>>>>,
    /// Bytes the uploads have received so far.
    uploaded: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Records `"dropped"` for an upload whose handler is dropped before it ends.
struct Unfinished(Option<std::sync::Arc<std::sync::Mutex<Vec<Option<String>>>>>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(ends) = self.0.take() {
            ends.lock().unwrap().push(Some("dropped".into()));
        }
    }
}

impl Files for Impl {
    async fn echo(&self, data: Payload) -> Payload {
        data
    }
    async fn whoami(&self, ctx: CallContext) -> String {
        ctx.peer.to_string()
    }
    async fn download(&self, count: u32, size: u32, mut out: Sink<u32>) {
        for i in 0..count {
            let chunk = Payload::from(vec![i as u8; size as usize]);
            if out.send_with(i, vec![chunk]).await.is_err() {
                return;
            }
        }
    }
    async fn upload(&self, mut chunks: Source<u32>) -> u64 {
        let mut guard = Unfinished(Some(self.upload_ends.clone()));
        let mut total = 0;
        let end = loop {
            match chunks.recv_with().await {
                Some(Ok((_, attachments))) => {
                    let bytes = attachments.iter().map(|a| a.len() as u64).sum::<u64>();
                    self.uploaded.fetch_add(bytes, std::sync::atomic::Ordering::SeqCst);
                    total += bytes;
                }
                Some(Err(e)) => break Some(e.to_string()),
                None => break None,
            }
        };
        guard.0 = None;
        self.upload_ends.lock().unwrap().push(end);
        total
    }
    async fn hang(&self) {
        std::future::pending::<()>().await
    }
}

/// A fresh directory for one test's socket, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("zcrpc-unix-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }
    fn sock(&self) -> PathBuf {
        self.0.join("s.sock")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn serve(path: &Path, imp: Impl) -> ServerHandle {
    Server::builder().build(FilesServer::new(imp)).serve(UnixAcceptor::bind(path).await.unwrap())
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 4099) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_a_32_mib_payload_and_streams_go_over_a_unix_socket() {
    let dir = Dir::new("calls");
    let path = dir.sock();
    let handle = serve(&path, Impl::default()).await;
    let client = FilesClient::new(Client::connect_unix(&path, ClientConfig::default()).await.unwrap());
    assert_eq!(client.client().stats().transport, "unix");

    assert_eq!(&client.echo(Payload::from(b"hi".to_vec())).await.unwrap().to_bytes()[..], b"hi");
    assert_eq!(client.whoami().await.unwrap(), format!("unix:{}", path.display()));

    let big = pattern(32 << 20);
    let back = client.echo(Payload::from(big.clone())).await.unwrap();
    assert_eq!(back.len(), big.len());
    assert!(back.to_bytes() == big, "the 32 MiB payload came back different");

    let mut chunks = client.download(8, 1 << 20).await.unwrap();
    let mut seen = 0;
    while let Some(item) = chunks.recv_with().await {
        let (i, attachments) = item.unwrap();
        assert_eq!(i, seen);
        assert!(attachments[0].to_bytes().iter().all(|b| *b == i as u8));
        assert_eq!(attachments[0].len(), 1 << 20);
        seen += 1;
    }
    assert_eq!(seen, 8);

    let (mut up, total) = client.upload().await.unwrap();
    for i in 0..8u32 {
        up.send_with(i, vec![Payload::from(pattern(1 << 20))]).await.unwrap();
    }
    up.finish();
    assert_eq!(total.await.unwrap(), 8 << 20);

    assert_eq!(handle.server().stats().transport, "unix");
    handle.shutdown().await;
    assert!(!path.exists(), "the socket file is removed when the server shuts down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_vanishes_mid_upload_ends_its_stream_and_frees_the_server() {
    let dir = Dir::new("client-gone");
    let path = dir.sock();
    let imp = Impl::default();
    let handle = serve(&path, imp.clone()).await;
    {
        let client = FilesClient::new(Client::connect(unix::connect(&path).await.unwrap(), ClientConfig::default()).await.unwrap());
        let (mut up, _total) = client.upload().await.unwrap();
        up.send_with(0, vec![Payload::from(pattern(1 << 20))]).await.unwrap();
        // Once the server has the chunk (before, the cancel would withdraw a request still
        // queued, and the handler would never run), the whole client goes: its connection
        // closes with the upload unfinished.
        tokio::time::timeout(Duration::from_secs(10), async {
            while imp.uploaded.load(std::sync::atomic::Ordering::SeqCst) < 1 << 20 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the server received the chunk");
    }
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(end) = imp.upload_ends.lock().unwrap().first().cloned() {
                return end;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the handler learns its client is gone, or is dropped");
    assert!(ended.is_some(), "an unfinished upload ends with an error or is dropped, never cleanly");
    tokio::time::timeout(Duration::from_secs(10), async {
        while handle.server().connections() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the connection is released");
    // And the server serves the next client.
    let client = FilesClient::new(Client::connect_unix(&path, ClientConfig::default()).await.unwrap());
    assert_eq!(client.echo(Payload::from(vec![7u8; 10])).await.unwrap().len(), 10);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_vanishes_fails_the_calls_in_flight_and_is_re_dialed_when_back() {
    let dir = Dir::new("server-gone");
    let path = dir.sock();
    let handle = serve(&path, Impl::default()).await;
    let config = ClientConfig {
        reconnect: Reconnect { initial_backoff: Duration::from_millis(20), ..Reconnect::default() },
        ..ClientConfig::default()
    };
    let client = FilesClient::new(Client::connect_unix(&path, config).await.unwrap());
    let hanging = tokio::spawn({
        let client = client.clone();
        async move { client.hang().await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Dropping the handle aborts the server: connections end without a goaway.
    drop(handle);
    let err = tokio::time::timeout(Duration::from_secs(10), hanging).await.expect("the call fails").unwrap().unwrap_err();
    assert!(matches!(err, CallError::Connection(_) | CallError::ShuttingDown), "{err:?}");
    // A new server on the same path: the old socket file is stale or gone, either way fine.
    let handle = serve(&path, Impl::default()).await;
    let back = tokio::time::timeout(Duration::from_secs(10), client.echo(Payload::from(vec![1u8; 3]))).await.unwrap().unwrap();
    assert_eq!(back.len(), 3);
    handle.shutdown().await;
}

#[tokio::test]
async fn a_stale_socket_file_is_replaced_but_a_live_one_or_a_plain_file_is_left_with_an_error() {
    let dir = Dir::new("stale");
    let path = dir.sock();
    // A socket file nobody accepts on: what a killed server leaves.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let handle = serve(&path, Impl::default()).await;
    let client = FilesClient::new(Client::connect_unix(&path, ClientConfig::default()).await.unwrap());
    assert_eq!(client.echo(Payload::from(vec![1u8; 4])).await.unwrap().len(), 4);

    // A second server on the live socket: refused, and the first keeps its file.
    let err = UnixAcceptor::bind(&path).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    assert!(err.to_string().contains(&format!("unix:{}", path.display())), "{err}");
    assert!(err.to_string().contains("already listening"), "{err}");
    assert_eq!(client.echo(Payload::from(vec![1u8; 5])).await.unwrap().len(), 5);
    handle.shutdown().await;

    // A plain file is never removed.
    std::fs::write(&path, b"not a socket").unwrap();
    let err = UnixAcceptor::bind(&path).await.unwrap_err();
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");
}

#[tokio::test]
async fn connecting_to_a_missing_socket_names_its_path() {
    let dir = Dir::new("missing");
    let path = dir.sock();
    let err = Client::connect_unix(&path, ClientConfig::default()).await.unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with(&format!("connecting to unix:{}: could not connect: ", path.display())), "{text}");
    assert_eq!(err.target(), Some(format!("unix:{}", path.display()).as_str()));
    assert!(matches!(err.reason(), rpc_core::ConnectError::Io(e) if e.kind() == std::io::ErrorKind::NotFound), "{err:?}");
}
