//! `echo serve --addr unix:PATH` and `echo call --addr unix:PATH` in two processes, as a user
//! runs them; SIGTERM stops the server and its socket file goes with it.
#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

fn example(name: &str) -> PathBuf {
    // target/<profile>/deps/unix_cli-* → target/<profile>/examples/NAME (cargo test builds it).
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("examples").join(name);
    assert!(bin.exists(), "{} not built (run through cargo test)", bin.display());
    bin
}

#[test]
fn echo_serves_and_calls_over_a_unix_socket() {
    let dir = std::env::temp_dir().join(format!("zcrpc-unix-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("echo.sock");
    let addr = format!("unix:{}", sock.display());
    let mut server = Command::new(example("echo")).args(["serve", "--addr", &addr]).stderr(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(server.stderr.as_mut().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), format!("echo: serving on {addr}"));
    assert!(sock.exists());

    let out = Command::new(example("echo"))
        .args(["call", "--addr", &addr, "--size", "3000000", "--count", "10", "--concurrency", "3", "--stats-json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("ok calls=10 bytes=30000000 secs="), "{stdout}");
    assert!(stdout.contains(r#""transport":"unix""#), "{stdout}");

    Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
    let mut status = None;
    for _ in 0..200 {
        status = server.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let Some(status) = status else {
        let _ = server.kill();
        panic!("echo serve did not stop within 10 s of SIGTERM");
    };
    assert!(status.success(), "{status:?}");
    assert!(!sock.exists(), "the socket file is removed at shutdown");

    // Nobody serves there now: the error names the socket.
    let out = Command::new(example("echo")).args(["call", "--addr", &addr, "--size", "1", "--count", "1"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("connecting to {addr}: could not connect")), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_quickstart_runs_over_a_unix_socket() {
    let sock = std::env::temp_dir().join(format!("zcrpc-quickstart-{}.sock", std::process::id()));
    let addr = format!("unix:{}", sock.display());
    let out = Command::new(example("quickstart")).args(["--addr", &addr]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("server on {addr}")), "{stdout}");
    assert!(stdout.contains("every byte checked") && stdout.contains("client transport: unix"), "{stdout}");
    assert!(!sock.exists(), "the socket file is removed at shutdown");
}

#[test]
fn the_quickstart_prints_an_error_as_a_sentence_and_exits_one() {
    let addr = "unix:/nonexistent-zcrpc-dir/quickstart.sock";
    let out = Command::new(example("quickstart")).args(["--addr", addr]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("/nonexistent-zcrpc-dir/quickstart.sock"), "the error names the path: {stderr}");
    assert!(!stderr.contains("Os {") && !stderr.contains("Error: \""), "not a Debug dump: {stderr}");
}
