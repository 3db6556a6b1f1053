//! The backend probe: done once per process, logged once.

use std::sync::OnceLock;

use crate::config::Backend;
use crate::sys;

/// What the kernel offers, and the backend `Backend::Auto` resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Probe {
    /// The best backend available: `Uring`, `MsgZc` or `Copy`.
    pub backend: Backend,
    /// Why that backend (and not a better one).
    pub reason: String,
    /// Kernel release (major, minor).
    pub kernel: (u32, u32),
    /// A ring can be set up.
    pub io_uring: bool,
    /// `IORING_OP_SEND_ZC` (6.0).
    pub send_zc: bool,
    /// `IORING_OP_SENDMSG_ZC` (6.1).
    pub sendmsg_zc: bool,
    /// `IORING_OP_RECV`.
    pub recv: bool,
    /// Multishot receive (6.0).
    pub recv_multishot: bool,
    /// Provided-buffer rings (5.19).
    pub buf_ring: bool,
    /// Vectored sends from fixed buffers (6.15).
    pub vectored_fixed: bool,
    /// `IORING_REGISTER_CLONE_BUFFERS` with offsets (6.13).
    pub clone_buffers: bool,
    /// `SO_ZEROCOPY` / `MSG_ZEROCOPY` (4.14).
    pub msg_zerocopy: bool,
}

/// Environment variable that makes the probe act as if io_uring were refused (as with
/// `kernel.io_uring_disabled=2`): for tests and for checking the fallback on a machine that has
/// io_uring.
pub const DISABLE_URING_ENV: &str = "ZCRPC_DISABLE_URING";

/// The probe, run on first use.
pub fn probe() -> &'static Probe {
    static PROBE: OnceLock<Probe> = OnceLock::new();
    PROBE.get_or_init(|| {
        let p = run();
        tracing::info!(
            backend = %p.backend,
            send_zc = p.send_zc,
            sendmsg_zc = p.sendmsg_zc,
            msg_zerocopy = p.msg_zerocopy,
            vectored_fixed = p.vectored_fixed,
            "zero-copy backend: {} ({})",
            p.backend,
            p.reason
        );
        p
    })
}

fn kernel_version() -> (u32, u32) {
    let rel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut it = rel
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    let major = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let minor = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (major, minor)
}

fn msg_zerocopy_works() -> bool {
    match socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None) {
        Ok(s) => {
            use std::os::fd::AsRawFd;
            sys::sock::set_zerocopy(s.as_raw_fd()).is_ok()
        }
        Err(_) => false,
    }
}

fn run() -> Probe {
    let kernel = kernel_version();
    let at_least = |maj: u32, min: u32| kernel >= (maj, min);
    let msg_zerocopy = msg_zerocopy_works();
    let disabled_sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .map(|s| s.trim().to_owned());
    let forced_off = std::env::var_os(DISABLE_URING_ENV).is_some_and(|v| !v.is_empty() && v != "0");
    let ring = if forced_off {
        Err(format!(
            "io_uring refused: {DISABLE_URING_ENV} is set (simulated kernel.io_uring_disabled)"
        ))
    } else {
        sys::ring::probe_ring().map_err(|e| {
            let sysctl = match disabled_sysctl.as_deref() {
                Some(v) if v != "0" => format!(" (kernel.io_uring_disabled = {v})"),
                _ => String::new(),
            };
            format!("io_uring refused: {e}{sysctl}")
        })
    };
    let mut p = Probe {
        backend: Backend::Copy,
        reason: String::new(),
        kernel,
        io_uring: ring.is_ok(),
        send_zc: false,
        sendmsg_zc: false,
        recv: false,
        recv_multishot: false,
        buf_ring: false,
        vectored_fixed: false,
        clone_buffers: false,
        msg_zerocopy,
    };
    let why_not_uring = match ring {
        Ok(f) => {
            p.send_zc = f.send_zc;
            p.sendmsg_zc = f.sendmsg_zc;
            p.recv = f.recv;
            p.recv_multishot = f.recv && at_least(6, 0);
            p.buf_ring = f.provide_buffers && at_least(5, 19);
            p.vectored_fixed = f.sendmsg_zc && at_least(6, 15);
            p.clone_buffers = at_least(6, 13);
            let why_not = uring_lacks(&f, kernel);
            if why_not.is_none() {
                p.backend = Backend::Uring;
                p.reason = format!(
                    "io_uring with SENDMSG_ZC on Linux {}.{}{}",
                    kernel.0,
                    kernel.1,
                    if p.vectored_fixed {
                        ", vectored fixed buffers"
                    } else {
                        ""
                    }
                );
                return p;
            }
            why_not.unwrap_or_default()
        }
        Err(e) => e,
    };
    if msg_zerocopy {
        p.backend = Backend::MsgZc;
        p.reason = format!("{why_not_uring}; using MSG_ZEROCOPY");
    } else {
        p.backend = Backend::Copy;
        p.reason = format!("{why_not_uring}; SO_ZEROCOPY refused too; copying");
    }
    p
}

/// Why a ring with `f` on Linux `kernel` cannot carry the engine (`None`: it can). Its sends
/// are `SENDMSG_ZC` asking for `IORING_SEND_ZC_REPORT_USAGE`, which the adaptive switch reads
/// (6.2: Linux 6.1 has `SENDMSG_ZC` but fails every send that asks for the report with
/// `EINVAL`), and its receives `RECV`.
fn uring_lacks(f: &sys::ring::RingFeatures, kernel: (u32, u32)) -> Option<String> {
    if !(f.sendmsg_zc && f.recv) {
        return Some(format!("io_uring lacks SENDMSG_ZC (Linux {}.{}; needs 6.1)", kernel.0, kernel.1));
    }
    if kernel < (6, 2) {
        return Some(format!(
            "io_uring's SENDMSG_ZC cannot report copied sends (IORING_SEND_ZC_REPORT_USAGE; Linux {}.{}; needs 6.2)",
            kernel.0, kernel.1
        ));
    }
    None
}

/// The backend a connection asking for `wanted` gets, and why when it is not that one.
pub(crate) fn resolve(wanted: Backend) -> (Backend, Option<String>) {
    let p = probe();
    match wanted {
        Backend::Auto => (p.backend, None),
        Backend::Copy => (Backend::Copy, None),
        Backend::Uring if p.backend == Backend::Uring => (Backend::Uring, None),
        Backend::Uring => (p.backend, Some(p.reason.clone())),
        Backend::MsgZc if p.msg_zerocopy => (Backend::MsgZc, None),
        Backend::MsgZc => (Backend::Copy, Some("SO_ZEROCOPY refused; copying".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux 6.1 has `SENDMSG_ZC` but refuses the usage report every engine send asks for
    /// (`EINVAL`): the engine must not pick io_uring there (it falls back to `MSG_ZEROCOPY`).
    #[test]
    fn io_uring_is_the_backend_only_where_sends_can_report_usage() {
        let all = sys::ring::RingFeatures { send_zc: true, sendmsg_zc: true, recv: true, provide_buffers: true };
        let why = uring_lacks(&all, (6, 1)).expect("6.1 cannot carry the engine's sends");
        assert!(why.contains("IORING_SEND_ZC_REPORT_USAGE") && why.contains("6.2"), "{why}");
        assert_eq!(uring_lacks(&all, (6, 2)), None);
        assert_eq!(uring_lacks(&all, (6, 18)), None);
        let no_sendmsg_zc = sys::ring::RingFeatures { sendmsg_zc: false, ..all };
        assert!(uring_lacks(&no_sendmsg_zc, (6, 0)).unwrap().contains("lacks SENDMSG_ZC"));
    }
}
