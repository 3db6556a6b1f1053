//! Thread placement: bind the calling thread to one CPU (for benchmarks and latency-sensitive
//! deployments, where cross-CPU wakeups dominate small-call latency).

use std::io;

/// Binds the calling thread (and the threads it starts afterwards) to CPU `cpu`.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("CPU {cpu} is out of range"),
        ));
    }
    // SAFETY: `cpu_set_t` is a plain bit array (sched_setaffinity(2)); all-zeroes is the empty
    // set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` was checked against the set's capacity above (CPU_SET(3) writes one bit).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: sched_setaffinity(2): pid 0 is the calling thread; the pointer and size describe
    // `set`, which lives across the call and is only read.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
