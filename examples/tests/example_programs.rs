//! The streaming example programs run to the end and say what they should: each is a user's
//! first look at streams, so it must not rot. Every program with options explains them on
//! `--help`.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// An example binary, which `cargo test` builds next to the tests.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("examples").join(name);
    assert!(bin.exists(), "{} not built (run through cargo test)", bin.display());
    bin
}

/// Runs an example to its end (within 30 s) and returns what it printed.
fn run(name: &str) -> String {
    let start = Instant::now();
    let out = Command::new(example(name)).output().unwrap();
    assert!(out.status.success(), "{name} failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(start.elapsed() < Duration::from_secs(30), "{name} took {:?}", start.elapsed());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_subscription_example_refuses_without_a_token_and_streams_with_one() {
    let out = run("subscription");
    assert!(out.contains("client: without a token: Unauthenticated"), "{out}");
    let errors: Vec<_> = out.lines().filter(|l| l.starts_with("client: errors")).collect();
    assert_eq!(errors.len(), 5, "{out}");
    assert!(errors.iter().all(|l| l.contains(" error ")), "the filter holds: {out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("client: everything")).count(), 5, "{out}");
}

#[test]
fn the_chat_example_delivers_every_message_to_every_member() {
    let out = run("chat");
    for member in ["ada", "bob", "cy"] {
        for said in ["ada: hello", "bob: hi ada", "cy: o/", "bob: only model weights today"] {
            let heard = out.lines().any(|l| l.trim_start().starts_with(&format!("{member} hears")) && l.contains(said));
            assert!(heard, "{member} did not hear {said:?}:\n{out}");
        }
    }
    assert_eq!(out.matches("server: ").filter(|_| true).count(), 6, "three joined and three left:\n{out}");
}

#[test]
fn the_tls_example_lets_client_a_open_and_refuses_client_b_and_a_client_without_a_certificate() {
    let out = run("tls");
    assert!(out.contains("client a: echo -> \"hello\""), "{out}");
    assert!(out.contains("client b: echo -> \"hello\""), "{out}");
    assert!(out.contains("client a: open -> \"opened for CN=a\""), "{out}");
    assert!(out.contains("client b: open -> refused:") && out.contains("permission denied: CN=b may not call vault.v1.Vault/open"), "{out}");
    assert!(out.contains("client without a certificate:") && out.contains("requires a client certificate"), "{out}");
}

#[test]
fn the_tarpc_dropin_example_serves_tarpc_code_over_zcrpc() {
    let out = run("tarpc_dropin");
    assert!(out.contains("Hello, zcrpc! You are connected from [::1]:"), "{out}");
    for i in 0..3 {
        assert!(out.contains(&format!("Hello, caller {i}!")), "{out}");
    }
}

#[test]
fn the_tonic_dropin_example_serves_tonic_code_over_zcrpc() {
    let out = run("tonic_dropin");
    assert!(out.contains("Got a request from Some([::1]:"), "{out}");
    assert!(out.contains("RESPONSE=\"Hello Tonic!\""), "{out}");
    assert!(out.contains("RESPONSE=\"Hello zcrpc!\""), "{out}");
}

#[test]
fn the_blob_store_example_puts_gets_lists_and_streams_a_blob_byte_exact() {
    let out = Command::new(example("blob_store")).args(["--size-mib", "16", "--chunk-kib", "256"]).output().unwrap();
    assert!(out.status.success(), "blob_store failed: {}", String::from_utf8_lossy(&out.stderr));
    let out = String::from_utf8(out.stdout).unwrap();
    let big = 16 << 20;
    assert!(out.contains(&format!("server: stored \"big\" as received ({big} bytes, a 64-byte aligned slice of the receive buffer: true)")), "{out}");
    assert!(out.contains(&format!("client: put big (16 MiB) -> stored {big} bytes")), "{out}");
    assert!(out.contains(&format!("client: get big -> {big} bytes, byte-exact: true")), "{out}");
    assert!(out.contains(&format!("client: list -> big: {big} bytes")) && out.contains("client: list -> small: 12 bytes"), "{out}");
    assert!(out.contains(&format!("client: streamed get big in 64 chunks of 256 KiB -> {big} bytes, in order: true, byte-exact: true")), "{out}");
    assert!(out.contains("client: get nothing -> server returned invalid argument: no blob under \"nothing\""), "{out}");
}

/// Runs `name args` and returns its standard output, which must come with exit status 0.
fn help(name: &str, args: &[&str]) -> String {
    let out = Command::new(example(name)).args(args).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{name} {args:?} exited {:?}: {}{text}", out.status, String::from_utf8_lossy(&out.stderr));
    text
}

/// Every option and its default appear in the text, and an example line does.
fn assert_names(text: &str, options: &[&str], defaults: &[&str]) {
    for option in options {
        assert!(text.contains(option), "{option} missing from:\n{text}");
    }
    for default in defaults {
        assert!(text.contains(&format!("[default: {default}")), "default {default} missing from:\n{text}");
    }
    assert!(text.contains("Examples:"), "no examples in:\n{text}");
}

#[test]
fn every_program_prints_its_usage_for_help_and_exits_zero() {
    let echo = help("echo", &["--help"]);
    assert_names(&echo, &["serve", "call", "--addr", "--size", "--count", "--concurrency", "--transport", "--max-connections", "--stats-json", "--tls-cert", "--tls-ca"], &[]);
    // `echo help serve` is clap's spelling of the same; `-h` the short one.
    for args in [&["serve", "--help"][..], &["help", "serve"], &["serve", "-h"]] {
        let serve = help("echo", args);
        assert_names(
            &serve,
            &["--addr", "--transport", "--zc", "--recv", "--max-connections", "--memory-budget", "--write-stall-ms", "--max-call-ms", "--max-age-ms", "--tls-cert", "--tls-key", "--tls-ca", "--tls-crl"],
            &["adaptive", "read", "the server's, 1024"],
        );
    }
    let call = help("echo", &["call", "--help"]);
    assert_names(
        &call,
        &["--addr", "--size", "--count", "--concurrency", "--transport", "--zc", "--recv", "--stats-json", "--tls-ca", "--tls-name", "--tls-cert", "--tls-key", "--tls-crl"],
        &["1", "adaptive", "read", "localhost"],
    );
    assert!(call.contains("always-zc") && call.contains("ring"), "the modes are listed:\n{call}");
    let quickstart = help("quickstart", &["--help"]);
    assert_names(&quickstart, &["--transport", "--zc", "--recv"], &["adaptive", "read"]);
    let blob_store = help("blob_store", &["--help"]);
    assert_names(&blob_store, &["--size-mib", "--chunk-kib", "--addr"], &["64", "1024", "127.0.0.1:0"]);
    let soak = help("soak", &["--help"]);
    assert_names(&soak, &["--secs", "--transport", "--seed"], &["600", "tcp", "the process id"]);
    assert!(!soak.contains("upload"), "the child roles stay hidden:\n{soak}");
    let files = help("file_server", &["--help"]);
    assert_names(&files, &["serve", "get", "list", "--root", "--addr", "--out", "--offset", "--len", "--resume"], &[]);
    let get = help("file_server", &["get", "--help"]);
    assert_names(&get, &["--addr", "--out", "--offset", "--len", "--resume", "--transport"], &["0", "adaptive"]);
    assert_names(&help("file_server", &["serve", "--help"]), &["--root", "--addr", "--transport"], &["adaptive"]);
    assert_names(&help("file_server", &["list", "--help"]), &["--addr", "[DIR]"], &["."]);
    // The programs without options say what they do instead of running on `--help`.
    for name in ["subscription", "chat"] {
        let text = help(name, &["--help"]);
        assert_names(&text, &["Usage:"], &[]);
        assert!(!text.contains("server: "), "{name} ran instead of printing its usage:\n{text}");
    }
}

#[test]
fn a_wrong_option_is_refused_with_a_pointer_to_help_and_a_non_zero_exit() {
    for (name, args) in [("echo", &["serve", "--adress", "127.0.0.1:0"][..]), ("echo", &[][..]), ("quickstart", &["--transport", "carrier-pigeon"][..]), ("chat", &["--rooms", "2"][..]), ("quickstart", &["--addr", "127.0.0.1:7000"][..]), ("soak", &["--secs", "5"][..]), ("file_server", &["get", "--addr", "127.0.0.1:1"][..]), ("blob_store", &["--size", "1"][..])] {
        let out = Command::new(example(name)).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name} {args:?}: {err}");
        assert!(err.contains("--help"), "{name} {args:?}: {err}");
    }
}
