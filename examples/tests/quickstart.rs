//! The quickstart as a newcomer runs it: over tcp (its file sent by `sendfile`) and with
//! `--tls` on tcp and uring (every byte encrypted, the file read then encrypted); each run checks every byte
//! it moved and exits 0. (Over a Unix socket: `unix_cli.rs`.)

use std::path::PathBuf;
use std::process::Command;

fn quickstart() -> PathBuf {
    // target/<profile>/deps/quickstart-* → target/<profile>/examples/quickstart.
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("examples").join("quickstart");
    assert!(bin.exists(), "{} not built (run through cargo test)", bin.display());
    bin
}

fn run(args: &[&str]) -> String {
    let out = Command::new(quickstart()).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "quickstart {args:?}: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("17 calls and 2 streams") && stdout.contains("every byte checked"), "{stdout}");
    stdout
}

/// The server's half of the report (after "server transport").
fn server_part(stdout: &str) -> &str {
    &stdout[stdout.find("server transport").expect("the server's counters")..]
}

#[test]
fn over_tcp_the_file_goes_by_sendfile() {
    let stdout = run(&["--transport", "tcp"]);
    // The frame of the file region, its 8 MiB and the frame's header (64 bytes), by sendfile:
    // an answer of more than 2 MiB goes in pieces of 1 MiB (`docs/pieces.md`), so 8 sends, each
    // piece behind its 8-byte marker.
    assert!(server_part(&stdout).contains("| file      |           8 |           8,388,736 |"), "{stdout}");
}

#[test]
fn with_tls_every_byte_is_encrypted_and_the_file_is_read_then_encrypted() {
    let stdout = run(&["--transport", "tcp", "--tls"]);
    assert!(stdout.contains("(tcp transport, TLS 1.3)"), "{stdout}");
    let server = server_part(&stdout);
    assert!(server.contains("server transport: tls"), "{stdout}");
    assert!(server.contains("file regions read into memory (no splice here), sent by copy: 8,388,608 bytes"), "{stdout}");
}

#[cfg(target_os = "linux")]
#[test]
fn with_tls_on_the_uring_engine_too() {
    let stdout = run(&["--transport", "uring", "--tls"]);
    assert!(stdout.contains("(uring transport, TLS 1.3)"), "{stdout}");
    // The engine's stats name the TLS path it took.
    assert!(server_part(&stdout).contains("+tls"), "{stdout}");
}
