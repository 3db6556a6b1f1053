//! One module per system under comparison; [`run`] measures one (system, scenario) pair in
//! the calling process.

pub mod file;
pub mod raw;
pub mod raw_best;
pub mod tarpc;
pub mod tarpc_over_zcrpc;
pub mod tls;
pub mod tonic;
pub mod tonic_over_zcrpc;
pub mod zcrpc;
pub mod zcrpc_proto;

use crate::meter::{Sample, Timing};
use crate::placement::Placement;
use crate::scenario::{Scenario, System};

/// Why a measurement produced no number.
#[derive(Debug, Clone)]
pub enum NoResult {
    /// The system cannot run here (a kernel feature is missing, a crate is not built yet).
    Unavailable(String),
    /// The system ran and failed.
    Failed(String),
}

/// Measures `system` on `scenario` with server and client placed as `placement` says.
pub fn run(
    system: System,
    scenario: Scenario,
    placement: Placement,
    timing: Timing,
) -> Result<Sample, NoResult> {
    if let Some(reason) = system.not_applicable(scenario) {
        return Err(NoResult::Unavailable(reason.to_string()));
    }
    let shape = scenario.shape();
    let latency = scenario.metrics().contains(&crate::scenario::Metric::P50Us);
    let failed = NoResult::Failed;
    match (system, scenario) {
        (System::RawTcpSimple, Scenario::File1g) => {
            return file::run_raw(file::RawFile::ReadWrite, placement, timing).map_err(failed)
        }
        (System::RawStream, Scenario::File1g) => {
            return file::run_raw(file::RawFile::Sendfile, placement, timing).map_err(failed)
        }
        _ => {}
    }
    match system {
        System::RawTcpSimple => {
            raw::run(shape, raw::SendPath::Write, placement, timing, latency).map_err(failed)
        }
        System::RawTcpBest => raw_best::run(shape, placement, timing, latency).map_err(failed),
        System::RawStream => raw_best::run_stream(shape, placement, timing).map_err(failed),
        System::RawUringZc => {
            // Probe first so that a kernel without SEND_ZC reads as unavailable, not failed.
            let probe = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| std::net::TcpStream::connect(l.local_addr()?))
                .and_then(|s| {
                    transport_uring::baseline::SendZcLoop::new(
                        &s,
                        bytes::Bytes::from_static(b"probe"),
                    )
                });
            if let Err(e) = probe {
                return Err(NoResult::Unavailable(format!("io_uring SEND_ZC: {e}")));
            }
            raw::run(shape, raw::SendPath::UringZc, placement, timing, latency).map_err(failed)
        }
        System::AesGcm1Core => tls::run_ceiling(shape, placement, timing).map_err(failed),
        System::Tonic => tonic::run(shape, None, placement, timing, latency).map_err(failed),
        System::TonicTls => {
            let certs = tls::Certs::generate().map_err(failed)?;
            tonic::run(shape, Some(certs), placement, timing, latency).map_err(failed)
        }
        System::TonicOverZcrpc => tonic_over_zcrpc::run(shape, placement, timing, latency),
        System::ZcrpcProto => zcrpc_proto::run(shape, placement, timing, latency),
        System::Tarpc => tarpc::run(shape, placement, timing, latency).map_err(failed),
        System::TarpcOverZcrpc => tarpc_over_zcrpc::run(shape, placement, timing, latency),
        System::ZcrpcTcp
        | System::ZcrpcUring
        | System::ZcrpcUringZc
        | System::ZcrpcMsgzc
        | System::ZcrpcTcpTls
        | System::ZcrpcUringTls => {
            zcrpc::run(system, scenario, placement, timing, latency)
        }
    }
}
