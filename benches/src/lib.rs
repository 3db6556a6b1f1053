//! zcrpc's benchmarks: the `compare` harness that measures zcrpc side by side with raw
//! sockets, tonic and tarpc (`cargo run --release -p rpc-bench --bin compare -- --quick`), and
//! the shared pieces of the criterion micro-benchmarks under `benches/`.
//!
//! Each measurement runs in a child process of `compare` holding one server and one client
//! thread (see [`placement::LAYOUT`]), so every system gets a fresh allocator, its own peak
//! RSS, and the same CPU placement.
//!
//! The few system calls std does not wrap (epoll, socket buffer sizes and the receive
//! low-water mark, memfd, sendfile) are in [`sys`], the only module allowed `unsafe`.

#![deny(unsafe_code)]

pub mod cpu;
pub mod machine;
pub mod meter;
pub mod placement;
pub mod report;
pub mod scenario;
pub mod stats;
#[allow(unsafe_code)]
pub mod sys;
pub mod systems;
