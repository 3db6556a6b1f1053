//! TLS 1.3 key updates in zcrpc's own record layer (`tls_session`, what the io_uring transport's
//! TLS seals and opens with), against rustls's own record layer (tokio-rustls) on the other end
//! of a real loopback connection: our key updates are followed by rustls, rustls's (which asks
//! for ours in return) are followed and answered by us, and the bytes on both sides are the
//! bytes sent. A key may protect only 2^24 records under AES-GCM: without updates a busy
//! connection would have to end every few minutes.
#![cfg(feature = "tls")]

#[path = "tls_support/mod.rs"]
mod support;

use std::time::Duration;

use bytes::BytesMut;
use rpc_core::transport::tls_session::{
    self, body_len, Opened, RecordOpener, RecordSealer, HEADER_LEN, KEY_UPDATE_RECORD_LEN, RECORD_OVERHEAD,
};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

const LIMIT: Duration = Duration::from_secs(20);

/// A rustls server (tokio-rustls) and our client's session with it, over loopback.
async fn pair() -> (TlsStream<TcpStream>, TcpStream, tls_session::Session) {
    let ca = Ca::new("key update CA");
    let server_config = plain(&ca).rustls().unwrap();
    let client_config = tls_session::for_sessions_client(&trust(&ca).rustls().unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        tokio_rustls::TlsAcceptor::from(server_config).accept(tcp).await.unwrap()
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let session = tls_session::connect(&tcp, client_config, "localhost").await.unwrap();
    (server.await.unwrap(), tcp, session)
}

/// `data` sealed as records of at most `per_record` bytes, each preceded by a `key_update`
/// whenever the sealer owes one: the bytes the transport would send.
fn seal(sealer: &mut RecordSealer, data: &[u8], per_record: usize) -> Vec<u8> {
    let mut wire = Vec::new();
    for chunk in data.chunks(per_record) {
        if sealer.key_update_due() {
            let at = wire.len();
            wire.resize(at + KEY_UPDATE_RECORD_LEN, 0);
            let n = sealer.seal_key_update(&mut wire[at..]).unwrap();
            assert_eq!(n, KEY_UPDATE_RECORD_LEN);
        }
        let at = wire.len();
        wire.resize(at + chunk.len() + RECORD_OVERHEAD, 0);
        wire[at + HEADER_LEN..at + HEADER_LEN + chunk.len()].copy_from_slice(chunk);
        sealer.seal_in_place(&mut wire[at..], chunk.len()).unwrap();
    }
    wire
}

/// Reads and opens records until `want` bytes of application data have come.
async fn open(tcp: &mut TcpStream, opener: &mut RecordOpener, leftover: &mut BytesMut, want: usize) -> Vec<u8> {
    let mut data = Vec::new();
    while data.len() < want {
        while leftover.len() < HEADER_LEN {
            tcp.read_buf(leftover).await.unwrap();
        }
        let header: [u8; HEADER_LEN] = leftover[..HEADER_LEN].try_into().unwrap();
        let total = HEADER_LEN + body_len(&header).unwrap();
        while leftover.len() < total {
            assert_ne!(tcp.read_buf(leftover).await.unwrap(), 0, "the peer closed mid-record");
        }
        let mut record = leftover.split_to(total);
        match opener.open_in_place(&mut record).unwrap() {
            Opened::Data(n) => data.extend_from_slice(&record[HEADER_LEN..HEADER_LEN + n]),
            Opened::Nothing => {}
            Opened::Closed => panic!("the peer closed"),
        }
    }
    data
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

#[tokio::test]
async fn rustls_follows_our_key_updates() {
    tokio::time::timeout(LIMIT, async {
        let (mut server, mut tcp, mut session) = pair().await;
        session.sealer.rekey_after(3);
        let data = pattern(40_000, 1);
        let wire = seal(&mut session.sealer, &data, 1_000);
        // 40 records, a new key every 3: 13 updates.
        assert_eq!(session.sealer.key_updates(), 13);
        tcp.write_all(&wire).await.unwrap();
        let mut got = vec![0u8; data.len()];
        server.read_exact(&mut got).await.expect("rustls opens every record, across 13 key updates");
        assert!(got == data, "rustls read other bytes than were sealed");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn we_follow_rustls_key_updates_and_answer_its_request() {
    tokio::time::timeout(LIMIT, async {
        let (mut server, mut tcp, mut session) = pair().await;
        let mut leftover = std::mem::take(&mut session.leftover);
        // rustls's update asks for ours in return (`update_requested`).
        let first = pattern(20_000, 2);
        server.write_all(&first).await.unwrap();
        server.get_mut().1.refresh_traffic_keys().unwrap();
        let second = pattern(30_000, 3);
        server.write_all(&second).await.unwrap();
        server.flush().await.unwrap();
        let got = open(&mut tcp, &mut session.opener, &mut leftover, first.len() + second.len()).await;
        assert!(got[..first.len()] == first[..] && got[first.len()..] == second[..], "other bytes than rustls sent");
        assert_eq!(session.opener.key_updates(), 1, "the opener followed rustls's key update");

        // The update we owe goes ahead of our next record, and rustls reads past it.
        assert!(session.sealer.key_update_due(), "rustls asked for our key to be updated");
        let reply = pattern(5_000, 4);
        let wire = seal(&mut session.sealer, &reply, 16 * 1024);
        assert_eq!(session.sealer.key_updates(), 1);
        assert!(!session.sealer.key_update_due(), "one update answers the request");
        tcp.write_all(&wire).await.unwrap();
        let mut got = vec![0u8; reply.len()];
        server.read_exact(&mut got).await.expect("rustls opens our records under our next key");
        assert!(got == reply);

        // And rustls's records after all that still open here.
        let third = pattern(1_000, 5);
        server.write_all(&third).await.unwrap();
        server.flush().await.unwrap();
        assert!(open(&mut tcp, &mut session.opener, &mut leftover, third.len()).await == third);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn two_record_layers_update_keys_in_both_directions() {
    tokio::time::timeout(LIMIT, async {
        let ca = Ca::new("key update CA");
        let server_config = tls_session::for_sessions_server(&plain(&ca).rustls().unwrap());
        let client_config = tls_session::for_sessions_client(&trust(&ca).rustls().unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let session = tls_session::accept(&tcp, server_config).await.unwrap();
            (tcp, session)
        });
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let mut client = tls_session::connect(&tcp, client_config, "localhost").await.unwrap();
        let (mut server_tcp, mut server) = server.await.unwrap();
        let (mut client_left, mut server_left) = (std::mem::take(&mut client.leftover), std::mem::take(&mut server.leftover));
        client.sealer.rekey_after(2);
        server.sealer.rekey_after(5);
        for round in 0..4u8 {
            let up = pattern(9_000, round);
            tcp.write_all(&seal(&mut client.sealer, &up, 1_000)).await.unwrap();
            assert!(open(&mut server_tcp, &mut server.opener, &mut server_left, up.len()).await == up, "round {round}: up");
            let down = pattern(7_000, round.wrapping_add(100));
            server_tcp.write_all(&seal(&mut server.sealer, &down, 700)).await.unwrap();
            assert!(open(&mut tcp, &mut client.opener, &mut client_left, down.len()).await == down, "round {round}: down");
        }
        // 36 records a new key every 2, 40 records a new key every 5.
        assert_eq!((client.sealer.key_updates(), server.opener.key_updates()), (17, 17));
        assert_eq!((server.sealer.key_updates(), client.opener.key_updates()), (7, 7));
    })
    .await
    .unwrap();
}
