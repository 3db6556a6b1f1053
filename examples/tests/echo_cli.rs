//! The echo example as a user runs it: `echo serve` in one process, `echo call` in another,
//! SIGTERM for a graceful stop.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn echo_bin() -> PathBuf {
    // target/<profile>/deps/echo_cli-* → target/<profile>/examples/echo (cargo test builds it).
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("examples").join("echo");
    assert!(bin.exists(), "{} not built (run through cargo test)", bin.display());
    bin
}

struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let mut child = Command::new(echo_bin())
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stderr.as_mut().unwrap()).read_line(&mut line).unwrap();
        let addr = line.trim().strip_prefix("echo: serving on ").unwrap_or_else(|| panic!("unexpected: {line}")).to_owned();
        Server { child, addr }
    }

    fn stop(mut self) -> std::process::ExitStatus {
        // The `kill` command sends SIGTERM without any unsafe code here.
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        for _ in 0..100 {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child.kill().unwrap();
        panic!("echo serve did not stop within 5 s of SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A test that failed before `stop` must not leave a server behind (it would hold the
        // test harness's output pipe open).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn call(addr: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(echo_bin()).args(["call", "--addr", addr]).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn stats(stdout: &str) -> serde_json::Value {
    let line = stdout.lines().find(|l| l.starts_with('{')).expect("a JSON line");
    serde_json::from_str(line).unwrap()
}

#[test]
fn serve_call_and_graceful_stop_over_tcp() {
    let server = Server::start(&["--transport", "tcp"]);
    let (ok, out, err) = call(&server.addr, &["--transport", "tcp", "--size", "300000", "--count", "20", "--concurrency", "4", "--stats-json"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("ok calls=20 bytes=6000000 secs="), "{out}");
    let s = stats(&out);
    assert_eq!(s["transport"], "tcp");
    for field in ["sends_copy", "sends_zc", "sends_coalesced", "notifications", "notifications_copied", "path_switches", "enobufs_fallbacks"] {
        assert!(s[field].is_u64(), "missing {field} in {s}");
    }
    assert!(s["sends_copy"].as_u64().unwrap() >= 20);
    assert!(server.stop().success());
}

#[test]
fn a_failed_call_prints_the_error_and_exits_non_zero() {
    // Nobody listens on this port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (ok, _, err) = call(&format!("127.0.0.1:{port}"), &["--transport", "tcp", "--size", "10", "--count", "1"]);
    assert!(!ok);
    assert!(err.contains("error:") && err.contains("connect"), "{err}");
    let (ok, _, err) = call("127.0.0.1:1", &["--size", "ten", "--count", "1"]);
    assert!(!ok && err.contains("'ten'") && err.contains("--size"), "{err}");
}

#[cfg(target_os = "linux")]
#[test]
fn uring_always_zc_sends_zero_copy_and_every_send_is_notified() {
    let server = Server::start(&["--transport", "uring", "--zc", "always-zc"]);
    let (ok, out, err) = call(&server.addr, &["--transport", "uring", "--zc", "always-zc", "--size", "1048576", "--count", "16", "--concurrency", "2", "--stats-json"]);
    assert!(ok, "{err}");
    let s = stats(&out);
    assert_eq!(s["transport"], "uring");
    let zc = s["sends_zc"].as_u64().unwrap();
    assert!(zc >= 16, "{s}");
    // Each zero-copy submission (a short send resubmits) gets its notification.
    assert!(s["notifications"].as_u64().unwrap() >= zc, "{s}");
    // Loopback always copies: the kernel says so in every notification.
    assert_eq!(s["notifications_copied"], s["notifications"], "{s}");
    assert!(server.stop().success());
}

#[cfg(target_os = "linux")]
#[test]
fn uring_adaptive_notices_loopback_copies_and_switches_to_copy() {
    let server = Server::start(&["--transport", "uring"]);
    let (ok, out, err) = call(&server.addr, &["--transport", "uring", "--size", "1048576", "--count", "32", "--stats-json"]);
    assert!(ok, "{err}");
    let s = stats(&out);
    assert!(s["path_switches"].as_u64().unwrap() >= 1, "{s}");
    assert!(s["notifications_copied"].as_u64().unwrap() >= 1, "{s}");
    assert!(s["sends_copy"].as_u64().unwrap() > s["sends_zc"].as_u64().unwrap(), "{s}");
    assert!(server.stop().success());
}

#[cfg(target_os = "linux")]
#[test]
fn recv_ring_takes_small_frames_from_the_buffer_ring() {
    let server = Server::start(&["--transport", "uring", "--recv", "ring"]);
    let (ok, out, err) = call(&server.addr, &["--transport", "uring", "--recv", "ring", "--size", "1000", "--count", "200", "--concurrency", "8", "--stats-json"]);
    assert!(ok, "{err}");
    let s = stats(&out);
    assert!(s["recv_ring_chunks"].as_u64().unwrap() > 0, "{s}");
    let (ok, _, err) = call(&server.addr, &["--recv", "rings", "--size", "1", "--count", "1"]);
    assert!(!ok && err.contains("read, uring, ring"), "{err}");
    assert!(server.stop().success());
}

#[test]
fn serve_and_call_over_mutual_tls_and_refuse_a_client_without_a_certificate() {
    mutual_tls_over("tcp", "tls");
}

#[cfg(target_os = "linux")]
#[test]
fn serve_and_call_over_mutual_tls_on_the_uring_engine() {
    // `uring+tls`, or `tcp+tls` where the kernel refuses io_uring (the engine logs why).
    mutual_tls_over("uring", "+tls");
}

/// `echo serve` with mutual TLS and a revocation list over `transport`, a call with a client
/// certificate (its stats name a transport ending in `transport_stat`), one with a revoked
/// certificate, one without, and a plaintext one.
fn mutual_tls_over(transport: &str, transport_stat: &str) {
    let dir = common::tls_files(&format!("echo-mtls-{transport}"));
    let f = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let server = Server::start(&[
        "--transport", transport, "--tls-cert", &f("server.pem"), "--tls-key", &f("server.key"), "--tls-ca", &f("ca.pem"), "--tls-crl", &f("clients.crl"),
    ]);
    let (ok, out, err) = call(
        &server.addr,
        &["--transport", transport, "--tls-ca", &f("ca.pem"), "--tls-cert", &f("client.pem"), "--tls-key", &f("client.key"), "--size", "1048576", "--count", "8", "--concurrency", "2", "--stats-json"],
    );
    assert!(ok, "{err}");
    assert!(out.starts_with("ok calls=8 bytes=8388608 secs="), "{out}");
    let named = stats(&out)["transport"].as_str().unwrap().to_owned();
    assert!(named.ends_with(transport_stat), "{named}");

    let (ok, _, err) = call(
        &server.addr,
        &["--transport", transport, "--tls-ca", &f("ca.pem"), "--tls-cert", &f("revoked.pem"), "--tls-key", &f("revoked.key"), "--size", "10", "--count", "1"],
    );
    assert!(!ok);
    assert!(err.contains("refused our certificate as revoked"), "{err}");
    let (ok, _, err) = call(&server.addr, &["--transport", transport, "--tls-ca", &f("ca.pem"), "--size", "10", "--count", "1"]);
    assert!(!ok);
    assert!(err.contains("requires a client certificate"), "{err}");
    let (ok, _, err) = call(&server.addr, &["--transport", transport, "--size", "10", "--count", "1"]);
    assert!(!ok);
    assert!(err.contains("looks like TLS"), "a plaintext call is told the port speaks TLS: {err}");
    assert!(server.stop().success());
    std::fs::remove_dir_all(&dir).unwrap();
}
