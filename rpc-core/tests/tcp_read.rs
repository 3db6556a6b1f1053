//! `tcp::read_ready` clears tokio's readiness after a read that drains the socket; bytes that
//! arrive afterwards must still wake the reader, whatever the timing.

use std::time::Duration;

use bytes::BytesMut;
use rpc_core::transport::tcp::read_ready;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_byte_is_lost_and_no_wakeup_missed_after_a_draining_read() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let (mut writer, reader) = (a.unwrap(), b.unwrap().0);
    let total = 2_000_000usize;
    let data: Vec<u8> = (0..total).map(|i| (i * 7 + i / 251) as u8).collect();
    let sent = data.clone();
    let w = tokio::spawn(async move {
        let mut seed = 0x1234_5678u64;
        let mut pos = 0;
        while pos < sent.len() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let n = (1 + seed as usize % 3000).min(sent.len() - pos);
            writer.write_all(&sent[pos..pos + n]).await.unwrap();
            pos += n;
            // Pauses of every length, so that reads drain the socket and new bytes arrive
            // before, during and after readiness is cleared.
            match seed % 16 {
                0 => tokio::time::sleep(Duration::from_micros(seed % 300)).await,
                1..=3 => tokio::task::yield_now().await,
                _ => {}
            }
        }
        writer
    });
    let got = tokio::time::timeout(Duration::from_secs(30), async {
        let mut got = Vec::with_capacity(total);
        let mut seed = 99u64;
        while got.len() < total {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            // Rooms below, at and above what a write brings.
            let mut buf = BytesMut::with_capacity(1 + (seed >> 33) as usize % 4000);
            let n = read_ready(&reader, &mut buf).await.unwrap();
            assert!(n > 0 && n == buf.len());
            got.extend_from_slice(&buf);
        }
        got
    })
    .await
    .expect("a reader missed a wake-up (timed out)");
    assert!(got == data, "bytes out of order or lost");
    drop(w.await.unwrap());
    let mut buf = BytesMut::with_capacity(10);
    assert_eq!(read_ready(&reader, &mut buf).await.unwrap(), 0, "end of stream");
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn tcp_connections_carry_a_user_timeout_so_the_kernel_gives_up_on_a_vanished_peer() {
    use rpc_core::transport::tcp::{self, TcpAcceptor, USER_TIMEOUT};
    use rpc_core::transport::Acceptor;
    let mut acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let (client, server) = tokio::join!(tcp::connect(addr), acceptor.accept());
    assert_eq!(client.unwrap().user_timeout().unwrap(), Some(USER_TIMEOUT));
    assert_eq!(server.unwrap().user_timeout().unwrap(), Some(USER_TIMEOUT));
    // Configurable, and off when asked.
    let mut acceptor = acceptor.with_user_timeout(None);
    let (plain, server) = tokio::join!(TcpStream::connect(addr), acceptor.accept());
    assert_eq!(server.unwrap().user_timeout().unwrap(), None);
    let t = tcp::from_stream_with(plain.unwrap(), Some(Duration::from_millis(1500))).unwrap();
    assert_eq!(t.user_timeout().unwrap(), Some(Duration::from_millis(1500)));
}
