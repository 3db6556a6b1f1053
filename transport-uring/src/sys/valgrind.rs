//! Telling valgrind's memcheck about memory the kernel fills through io_uring.
//!
//! Memcheck tracks which bytes are defined by watching system calls; it does not see the
//! kernel write into a buffer named by an SQE (`IORING_OP_RECV`), so it takes those bytes for
//! the uninitialised capacity they were before and reports every later use of them. A client
//! request marks exactly the bytes a completion reported as defined. Outside valgrind the
//! request is a few register rotations that change nothing (valgrind's documented "magic
//! sequence"; `valgrind/valgrind.h`, `VALGRIND_DO_CLIENT_REQUEST_EXPR` for amd64).

/// `VG_USERREQ__MAKE_MEM_DEFINED` (`valgrind/memcheck.h`): `('M' << 24 | 'C' << 16) + 2`.
#[cfg(target_arch = "x86_64")]
const MAKE_MEM_DEFINED: u64 = ((b'M' as u64) << 24 | (b'C' as u64) << 16) + 2;

/// Marks `len` bytes at `ptr` as defined for memcheck (no effect outside valgrind).
pub(crate) fn mark_defined(ptr: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let args: [u64; 6] = [MAKE_MEM_DEFINED, ptr as u64, len as u64, 0, 0, 0];
        let mut result: u64 = 0;
        // SAFETY: the magic sequence rotates rdi by 3+13+61+51 = 128 bits (back to its value,
        // declared clobbered anyway) and exchanges rbx with itself: natively nothing changes
        // but the flags. Under valgrind it reads the six u64 of `args` (live on this frame)
        // and writes the result to rdx; MAKE_MEM_DEFINED only changes memcheck's shadow
        // state, never the bytes at `ptr`.
        unsafe {
            std::arch::asm!(
                "rol rdi, 3",
                "rol rdi, 13",
                "rol rdi, 61",
                "rol rdi, 51",
                "xchg rbx, rbx",
                in("rax") args.as_ptr(),
                inout("rdx") result,
                inout("rdi") 0u64 => _,
                options(nostack),
            );
        }
        let _ = result;
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (ptr, len);
}
