//! `FileRegion`: a range of an open file, sent as attachment bytes without entering the process.
//!
//! A region's length is known when it is made (checked against the file's size then), so a
//! frame carrying it is sized and planned without reading a byte. Transports that can move
//! file pages to the socket in the kernel do so (`sendfile` on TCP and Unix sockets, io_uring
//! `SPLICE` in `transport-uring`); the others read the region, and count that as a copy.
//!
//! On the wire a region is attachment bytes like any other: the receiver cannot tell.

use std::fmt;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

/// `offset..offset + len` of an open file, shared by `Arc` (cloning a region, or cutting
/// [`FileRegion::slice`]s of it, shares the descriptor).
///
/// ```
/// use std::io::Write;
/// use rpc_core::{FileRegion, Payload};
///
/// let dir = std::env::temp_dir().join(format!("zcrpc-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("genome.fa");
/// std::fs::File::create(&path).unwrap().write_all(b">chr1\nACGTACGT\n").unwrap();
///
/// let region = FileRegion::open(&path).unwrap();
/// assert_eq!(region.len(), 15);
/// let mut p = Payload::new();
/// p.push(bytes::Bytes::from_static(b"header:"));
/// p.push(region.slice(6, 8).unwrap()); // "ACGTACGT", read by nobody until it is sent
/// assert_eq!(p.len(), 15);
/// assert_eq!(&p.read_to_bytes().unwrap()[..], b"header:ACGTACGT");
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
#[derive(Clone)]
pub struct FileRegion {
    file: Arc<File>,
    offset: u64,
    len: usize,
}

impl FileRegion {
    /// `len` bytes of `file` from `offset`. Fails with `InvalidInput` when the range does not
    /// lie inside the file as it is now (its size is read once, here).
    pub fn new(file: Arc<File>, offset: u64, len: usize) -> io::Result<FileRegion> {
        let size = file.metadata()?.len();
        let end = offset.checked_add(len as u64);
        match end {
            Some(end) if end <= size => Ok(FileRegion { file, offset, len }),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("file region {offset}+{len} lies past the end of the file ({size} bytes)"),
            )),
        }
    }

    /// The whole of `file`, at its current size.
    pub fn whole(file: Arc<File>) -> io::Result<FileRegion> {
        let size = file.metadata()?.len();
        let len = usize::try_from(size)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file larger than the address space"))?;
        Ok(FileRegion { file, offset: 0, len })
    }

    /// Opens `path` read-only and takes all of it.
    pub fn open(path: impl AsRef<Path>) -> io::Result<FileRegion> {
        FileRegion::whole(Arc::new(File::open(path)?))
    }

    /// `len` bytes from `start` (relative to this region), sharing the descriptor; `None` when
    /// they do not lie inside this region.
    pub fn slice(&self, start: usize, len: usize) -> Option<FileRegion> {
        let end = start.checked_add(len)?;
        (end <= self.len).then(|| FileRegion { file: self.file.clone(), offset: self.offset + start as u64, len })
    }

    /// The open file.
    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// Where the region starts in the file.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Length in bytes (known without reading).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty region.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads bytes `at..` of the region (relative to its start) into `buf`, at most to the
    /// region's end; blocking (`pread`, the file's position untouched). Fails with
    /// [`FileRegion::shrank`]'s error when the file ends before the region does.
    pub fn read_at(&self, at: usize, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min(self.len.saturating_sub(at));
        let mut done = 0;
        while done < want {
            match read_at(&self.file, &mut buf[done..want], self.offset + (at + done) as u64) {
                Ok(0) => return Err(self.shrank(at + done)),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// [`FileRegion::read_at`] on tokio's blocking pool (a read may wait for the disk), into
    /// `buf`, which comes back with the count: for a transport that copies a region into
    /// memory a piece at a time without holding up its runtime's thread.
    pub async fn read_at_blocking(&self, at: usize, mut buf: Vec<u8>) -> io::Result<(usize, Vec<u8>)> {
        let region = self.clone();
        let (n, buf) = tokio::task::spawn_blocking(move || {
            let n = region.read_at(at, &mut buf);
            (n, buf)
        })
        .await
        .map_err(|e| io::Error::other(format!("file read task failed: {e}")))?;
        Ok((n?, buf))
    }

    /// The region's bytes, read into memory (a copy; blocking).
    pub fn read_to_bytes(&self) -> io::Result<Bytes> {
        let mut buf = BytesMut::zeroed(self.len);
        self.read_at(0, &mut buf)?;
        Ok(buf.freeze())
    }

    /// The error of a region whose file ended `at` bytes into it: the file was truncated after
    /// the region was made. Transports return it (kind `UnexpectedEof`) instead of sending a
    /// frame shorter than its header says.
    pub fn shrank(&self, at: usize) -> io::Error {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "file shrank while being sent: it ends at byte {} but the region is {}..{}",
                self.offset + at as u64,
                self.offset,
                self.offset + self.len as u64
            ),
        )
    }
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset)
}

#[cfg(windows)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, offset)
}

impl fmt::Debug for FileRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileRegion({}..{})", self.offset, self.offset + self.len as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(bytes: &[u8]) -> (std::path::PathBuf, Arc<File>) {
        let dir = std::env::temp_dir().join(format!("zcrpc-region-{}-{}", std::process::id(), bytes.len()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        File::create(&path).unwrap().write_all(bytes).unwrap();
        let f = Arc::new(File::open(&path).unwrap());
        (dir, f)
    }

    #[test]
    fn regions_are_checked_against_the_file_size() {
        let (dir, f) = file(b"0123456789");
        assert_eq!(FileRegion::new(f.clone(), 2, 8).unwrap().len(), 8);
        let e = FileRegion::new(f.clone(), 3, 8).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("past the end of the file (10 bytes)"), "{e}");
        assert!(FileRegion::new(f.clone(), u64::MAX, 2).is_err());
        let whole = FileRegion::whole(f).unwrap();
        assert_eq!(&whole.slice(3, 4).unwrap().read_to_bytes().unwrap()[..], b"3456");
        assert!(whole.slice(8, 3).is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_file_truncated_under_a_region_reads_as_an_error() {
        let (dir, f) = file(&[7u8; 1000]);
        let region = FileRegion::whole(f).unwrap();
        std::fs::OpenOptions::new().write(true).open(dir.join("f")).unwrap().set_len(400).unwrap();
        let e = region.read_to_bytes().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(e.to_string().contains("ends at byte 400 but the region is 0..1000"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
