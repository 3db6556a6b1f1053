//! The streaming example programs run to the end and say what they should: each is a user's
//! first look at streams, so it must not rot.

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
