//! Where the threads of one measurement run: CPU affinity, the server and client threads, and
//! the single-threaded tokio runtime each side gets.

use std::io;
use std::thread::{self, JoinHandle};

/// Which CPU each side is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// CPU of the server thread, `None` to inherit the process mask.
    pub server_cpu: Option<usize>,
    /// CPU of the client thread, `None` to inherit the process mask.
    pub client_cpu: Option<usize>,
}

/// The layout every system runs with, printed with the results.
pub const LAYOUT: &str = "one child process per (system, scenario, repetition) holding one server \
and one client; the server on its own OS thread, the client on another, each a single-threaded \
tokio runtime (current_thread) for the RPC systems, the client's calls made by a task spawned \
on it, and one blocking thread each for the raw systems; one TCP connection over loopback with TCP_NODELAY on both ends; the system allocator";

impl Placement {
    /// The placement for a scenario: everything on CPU 0 when pinned, otherwise the server on
    /// CPU 0 and the client on CPU 1 (both on CPU 0 if there is only one).
    pub fn for_scenario(pinned: bool, cpus: usize) -> Placement {
        if pinned {
            Placement {
                server_cpu: None,
                client_cpu: None,
            }
        } else {
            Placement {
                server_cpu: Some(0),
                client_cpu: Some(if cpus > 1 { 1 } else { 0 }),
            }
        }
    }

    /// Human-readable affinity for the report.
    pub fn describe(cpus: usize) -> String {
        let other = if cpus > 1 { 1 } else { 0 };
        format!(
            "latency_64b_pinned: the whole child process bound to CPU 0; every other scenario: \
             server thread bound to CPU 0, client thread bound to CPU {other} ({cpus} CPUs online)"
        )
    }
}

/// Binds the calling thread (and the threads it starts later) to one CPU.
pub fn bind_current_thread(cpu: usize) -> io::Result<()> {
    transport_uring::pin_current_thread(cpu)
}

/// Starts a named thread bound to `cpu` (if given) running `f`.
pub fn spawn_on<T, F>(name: &str, cpu: Option<usize>, f: F) -> JoinHandle<Result<T, String>>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, String> + Send + 'static,
{
    thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            if let Some(cpu) = cpu {
                bind_current_thread(cpu).map_err(|e| format!("binding to CPU {cpu}: {e}"))?;
            }
            f()
        })
        .expect("spawning a benchmark thread")
}

/// The runtime every async side runs on: one thread, IO and timers enabled.
pub fn current_thread_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("building a tokio runtime: {e}"))
}

/// Runs `client` as a task of the runtime (as an application's calls run), not as the future of
/// `block_on`: tokio's current-thread scheduler polls the driver once more (`epoll_wait` with a
/// zero timeout) before each poll of a woken `block_on` future, which would add a system call
/// per round trip to every tokio-based system's latency.
pub async fn in_task<T: Send + 'static>(client: impl std::future::Future<Output = Result<T, String>> + Send + 'static) -> Result<T, String> {
    tokio::spawn(client).await.map_err(|e| format!("the client task failed: {e}"))?
}

/// Runs a server on its own thread and a client on another, as [`Placement`] says, and
/// returns what the client returned. `server` gets a sender for the address it listens on;
/// the server thread is left running (the child process exits after the measurement).
pub fn run_pair<A, S, C, T>(placement: Placement, server: S, client: C) -> Result<T, String>
where
    A: Send + 'static,
    T: Send + 'static,
    S: FnOnce(std::sync::mpsc::Sender<A>) -> Result<(), String> + Send + 'static,
    C: FnOnce(A) -> Result<T, String> + Send + 'static,
{
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let server = spawn_on("bench-server", placement.server_cpu, move || {
        server(addr_tx)
    });
    let addr = match addr_rx.recv() {
        Ok(addr) => addr,
        Err(_) => {
            return Err(match server.join() {
                Ok(Err(e)) => format!("server: {e}"),
                Ok(Ok(())) => "server exited before listening".to_string(),
                Err(_) => "server panicked".to_string(),
            })
        }
    };
    let client = spawn_on("bench-client", placement.client_cpu, move || client(addr));
    client.join().map_err(|_| "client panicked".to_string())?
}
