//! A pool that does not fit `RLIMIT_MEMLOCK` fails with an error naming the limit and the size
//! asked. Run in a child as an unprivileged user (root has `CAP_IPC_LOCK` and no limit) with a
//! 1 MiB limit.

use transport_uring::{BufferPool, PoolError};

const CHILD_ENV: &str = "ZCRPC_MEMLOCK_CHILD";

#[test]
fn pool_over_memlock_limit_names_it() {
    if std::env::var_os(CHILD_ENV).is_some() {
        let err = BufferPool::new(8 << 20, 1 << 20).unwrap_err();
        let msg = err.to_string();
        println!("error: {msg}");
        // 8 MiB of buffers and the 64 KiB frame-head arena of their registration.
        assert!(
            matches!(err, PoolError::MemLock { asked: 8454144, .. }),
            "{err:?}"
        );
        assert!(
            msg.contains("RLIMIT_MEMLOCK")
                && msg.contains("8454144")
                && msg.contains("1048576 bytes"),
            "{msg}"
        );
        // A pool that fits still works.
        let pool = BufferPool::new(512 << 10, 64 << 10).unwrap();
        assert_eq!(pool.capacity(), 8);
        println!("MEMLOCK-CHILD-OK");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new("prlimit")
        .args([
            "--memlock=1048576:1048576",
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .arg(&exe)
        .args(["--exact", "pool_over_memlock_limit_names_it", "--nocapture"])
        .env(CHILD_ENV, "1")
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            eprintln!("SKIP: cannot run prlimit/setpriv: {e}");
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("child stdout:\n{stdout}\nchild stderr:\n{stderr}");
    if !out.status.success()
        && (stderr.contains("Permission denied")
            || stderr.contains("setpriv:")
            || stderr.contains("prlimit:"))
    {
        eprintln!("SKIP: cannot run the test binary as an unprivileged user here");
        return;
    }
    assert!(stdout.contains("MEMLOCK-CHILD-OK"), "child failed");
}
