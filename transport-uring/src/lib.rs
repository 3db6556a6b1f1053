//! The Linux zero-copy transport for zcrpc: io_uring `SEND_ZC`/`SENDMSG_ZC`, `MSG_ZEROCOPY`,
//! and a pinned, write-protected buffer pool. Work in progress: see issue 3.
#![warn(missing_docs)]
