//! The file server as a user runs it: `file_server serve` in one process, `get` and `list` in
//! others. Downloads arrive byte-exact over io_uring (splice) and tcp (sendfile) with both
//! sides' peak memory far below the file's size; ranges, resume and a checksum that does not
//! match; paths out of the root, a missing file and a range past the end refused with clear
//! errors and no file left; a connection cut mid-download leaves nothing under the final name.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use zcrpc_examples::child::ServerProcess;
use zcrpc_examples::fault_proxy::{Direction, Fault, FaultProxy};

fn bin() -> PathBuf {
    // target/<profile>/deps/file_server-* → target/<profile>/examples/file_server
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("examples").join("file_server");
    assert!(bin.exists(), "{} not built (run through cargo test)", bin.display());
    bin
}

fn serve(root: &Path, transport: &str) -> ServerProcess {
    let root = root.to_str().unwrap();
    ServerProcess::spawn(&bin(), &["serve", "--root", root, "--addr", "127.0.0.1:0", "--transport", transport]).unwrap()
}

fn run(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The value of `key=` in the `ok ...` line.
fn field(line: &str, key: &str) -> String {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
        .to_owned()
}

fn make_root(size: usize) -> (tempfile::TempDir, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    let data = zcrpc_examples::pattern(size, 42).to_vec();
    std::fs::write(root.join("data.bin"), &data).unwrap();
    std::fs::write(root.join("sub/small.txt"), b"hello").unwrap();
    std::fs::write(dir.path().join("secret.txt"), b"outside").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("escape")).unwrap();
    (dir, data)
}

#[test]
fn downloads_are_byte_exact_by_splice_and_sendfile_in_bounded_memory() {
    // Larger than the 64 MiB bound each side must stay under: neither side may hold it.
    let (dir, data) = make_root(96 << 20);
    for (transport, path) in [("uring", "uring:splice"), ("tcp", "tcp:sendfile")] {
        let server = serve(&dir.path().join("root"), transport);
        let addr = server.addr().to_string();
        let out = dir.path().join(format!("out-{transport}.bin"));
        let o = run(&["get", "--addr", &addr, "data.bin", "--out", out.to_str().unwrap(), "--transport", transport]);
        assert!(o.status.success(), "{transport}: {}", stderr(&o));
        let line = stdout(&o);
        assert_eq!(field(&line, "bytes"), (96u64 << 20).to_string(), "{line}");
        assert_eq!(field(&line, "path"), path, "{line}");
        assert!(std::fs::read(&out).unwrap() == data, "{transport}: the download differs");
        let (client_peak, server_peak): (u64, u64) =
            (field(&line, "client_peak_kib").parse().unwrap(), field(&line, "server_peak_kib").parse().unwrap());
        assert!(client_peak > 0 && client_peak < 64 << 10, "{transport}: client peak {client_peak} KiB: {line}");
        assert!(server_peak > 0 && server_peak < 64 << 10, "{transport}: server peak {server_peak} KiB: {line}");
        assert!(!dir.path().join(format!("out-{transport}.bin.part")).exists());
    }
}

#[test]
fn over_tls_downloads_are_byte_exact_and_a_client_without_the_ca_is_refused() {
    let (dir, data) = make_root(8 << 20);
    let pki = common::tls_files("file-server");
    let f = |name: &str| pki.join(name).to_str().unwrap().to_owned();
    for transport in ["tcp", "uring"] {
        let root = dir.path().join("root");
        let server = ServerProcess::spawn(
            &bin(),
            &["serve", "--root", root.to_str().unwrap(), "--addr", "127.0.0.1:0", "--transport", transport, "--tls-cert", &f("server.pem"), "--tls-key", &f("server.key")],
        )
        .unwrap();
        let addr = server.addr().to_string();
        let out = dir.path().join(format!("tls-{transport}.bin"));
        let o = run(&["get", "--addr", &addr, "data.bin", "--out", out.to_str().unwrap(), "--transport", transport, "--tls-ca", &f("ca.pem")]);
        assert!(o.status.success(), "{transport}: {}", stderr(&o));
        let line = stdout(&o);
        assert_eq!(field(&line, "bytes"), (8u64 << 20).to_string(), "{line}");
        // Encrypted in user space: the regions are read, then sealed.
        assert!(field(&line, "path").ends_with("tls:read+copy"), "{transport}: {line}");
        assert!(std::fs::read(&out).unwrap() == data, "{transport}: the download differs");
        let o = run(&["list", "--addr", &addr, "--transport", transport, "--tls-ca", &f("ca.pem")]);
        assert!(o.status.success() && stdout(&o).contains("data.bin"), "{transport}: {}", stderr(&o));
        // Without TLS the server's port is refused with the reason.
        let o = run(&["list", "--addr", &addr, "--transport", transport]);
        assert!(!o.status.success());
        assert!(stderr(&o).contains("looks like TLS"), "{transport}: {}", stderr(&o));
    }
    std::fs::remove_dir_all(&pki).unwrap();
}

#[test]
fn ranges_resume_listing_and_checksums() {
    let (dir, data) = make_root(9 << 20);
    let server = serve(&dir.path().join("root"), "uring");
    let addr = server.addr().to_string();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();

    let o = run(&["list", "--addr", &addr]);
    assert!(o.status.success(), "{}", stderr(&o));
    let listing = stdout(&o);
    assert!(listing.contains(&format!("{} data.bin", 9 << 20)) && listing.contains("sub/"), "{listing}");
    let o = run(&["list", "--addr", &addr, "sub"]);
    assert!(stdout(&o).contains("5 small.txt"), "{}", stdout(&o));

    // A range.
    let o = run(&["get", "--addr", &addr, "data.bin", "--out", &p("range.bin"), "--offset", "1000001", "--len", "3000000"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read(p("range.bin")).unwrap() == data[1_000_001..4_000_001]);

    // Resume: FILE.part holds the first 5 MiB already.
    std::fs::write(p("resumed.bin.part"), &data[..5 << 20]).unwrap();
    let o = run(&["get", "--addr", &addr, "data.bin", "--out", &p("resumed.bin"), "--resume"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(field(&stdout(&o), "resumed_from"), (5u64 << 20).to_string());
    assert!(std::fs::read(p("resumed.bin")).unwrap() == data, "the resumed download differs");
    assert!(!Path::new(&p("resumed.bin.part")).exists());

    // Resume from a corrupt FILE.part: the checksum catches it, nothing gets the final name.
    let mut bad = data[..1 << 20].to_vec();
    bad[12345] ^= 1;
    std::fs::write(p("bad.bin.part"), &bad).unwrap();
    let o = run(&["get", "--addr", &addr, "data.bin", "--out", &p("bad.bin"), "--resume"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("SHA-256 does not match"), "{}", stderr(&o));
    assert!(!Path::new(&p("bad.bin")).exists() && !Path::new(&p("bad.bin.part")).exists());
}

#[test]
fn bad_paths_and_ranges_are_refused_with_clear_errors_and_leave_no_file() {
    let (dir, _data) = make_root(1 << 20);
    let server = serve(&dir.path().join("root"), "tcp");
    let addr = server.addr().to_string();
    let out = dir.path().join("out.bin");
    let secret = dir.path().join("secret.txt");
    for (path, extra, expect) in [
        ("../secret.txt", &[][..], "permission denied"),
        (secret.to_str().unwrap(), &[][..], "permission denied"),
        ("escape", &[][..], "leads out of the root"),
        ("sub/../../secret.txt", &[][..], "permission denied"),
        ("missing.bin", &[][..], "not found: missing.bin"),
        ("sub", &[][..], "is a directory"),
        ("data.bin", &["--offset", "1048577"][..], "invalid argument: range 1048577+"),
        ("data.bin", &["--offset", "10", "--len", "1048576"][..], "lies past the end of data.bin (1048576 bytes)"),
    ] {
        let mut args = vec!["get", "--addr", &addr, path, "--out", out.to_str().unwrap(), "--transport", "tcp"];
        args.extend_from_slice(extra);
        let o = run(&args);
        assert!(!o.status.success(), "{path} {extra:?} was served");
        assert!(stderr(&o).contains(expect), "{path} {extra:?}: {}", stderr(&o));
        assert!(!out.exists() && !dir.path().join("out.bin.part").exists(), "{path}: a file was left");
    }
    let o = run(&["list", "--addr", &addr, "../", "--transport", "tcp"]);
    assert!(!o.status.success() && stderr(&o).contains("permission denied"), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_mid_download_leaves_nothing_under_the_final_name() {
    let (dir, _data) = make_root(64 << 20);
    let server = serve(&dir.path().join("root"), "uring");
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let addr = proxy.local_addr().to_string();
    let out = dir.path().join("cut.bin");
    let args: Vec<String> = ["get", "--addr", &addr, "data.bin", "--out", out.to_str().unwrap(), "--transport", "tcp"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let client = tokio::task::spawn_blocking(move || Command::new(bin()).args(&args).output().unwrap());
    // 3 MiB into the answer (the first chunks of 64 MiB), the proxy closes both sockets.
    proxy.connection(0).await.apply(Fault::CutAfter(Direction::ServerToClient, 3 << 20));
    let o = client.await.unwrap();
    assert!(!o.status.success(), "a cut download succeeded: {}", stdout(&o));
    assert!(stderr(&o).contains("get data.bin"), "{}", stderr(&o));
    assert!(!out.exists(), "the final name exists after a cut download");
    let part = dir.path().join("cut.bin.part");
    let kept = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    assert!(kept < 64 << 20, "the partial file holds {kept} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_shrinks_mid_download_fails_it_and_leaves_nothing_under_the_final_name() {
    let (dir, _data) = make_root(64 << 20);
    let server = serve(&dir.path().join("root"), "uring");
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let addr = proxy.local_addr().to_string();
    let out = dir.path().join("shrunk.bin");
    let part = dir.path().join("shrunk.bin.part");
    let args: Vec<String> = ["get", "--addr", &addr, "data.bin", "--out", out.to_str().unwrap(), "--transport", "tcp"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let client = tokio::task::spawn_blocking(move || Command::new(bin()).args(&args).output().unwrap());
    // Slowed to about 13 MB/s, so the download is surely still going when the file shrinks.
    let conn = proxy.connection(0).await;
    conn.apply(Fault::Delay(Direction::ServerToClient, std::time::Duration::from_millis(5)));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0) == 0 {
        assert!(std::time::Instant::now() < deadline, "no byte arrived in 30 s");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let source = dir.path().join("root/data.bin");
    std::fs::OpenOptions::new().write(true).open(&source).unwrap().set_len(1 << 20).unwrap();
    conn.apply(Fault::PassThrough);
    let o = client.await.unwrap();
    assert!(!o.status.success(), "a download of a shrunk file succeeded: {}", stdout(&o));
    let err = stderr(&o);
    eprintln!("client: {err}");
    // Between chunks the server says so; during a chunk's sendfile the connection ends.
    assert!(err.contains("file changed") || err.contains("middle of a frame"), "{err}");
    assert!(!out.exists(), "the final name exists after a failed download");
}
