//! `FileReceiver`: received attachments written straight into a file, in order, without
//! holding them. Each payload is written (`pwrite`, on tokio's blocking pool: a write may wait
//! for the disk) and dropped, so the receive buffer it is a slice of goes back at once and a
//! download larger than memory needs no more than one message's worth of it.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::{CallError, Payload, Segment, Source};
use crate::codec::Decode;

/// Writes payloads one after another into a file, from a starting offset.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use rpc_core::{FileReceiver, Payload};
///
/// let path = std::env::temp_dir().join(format!("zcrpc-receiver-doc-{}", std::process::id()));
/// let mut out = FileReceiver::create(&path).unwrap();
/// out.write(Payload::from(b"hello, ".to_vec())).await.unwrap();
/// out.write(Payload::from(b"file".to_vec())).await.unwrap();
/// assert_eq!(out.position(), 11);
/// out.sync_all().await.unwrap();
/// assert_eq!(std::fs::read(&path).unwrap(), b"hello, file");
/// # std::fs::remove_file(&path).unwrap();
/// # });
/// ```
#[derive(Debug)]
pub struct FileReceiver {
    file: Arc<File>,
    position: u64,
}

impl FileReceiver {
    /// Writes into `file` from byte `at` (a resumed download starts where the file ends).
    pub fn new(file: File, at: u64) -> FileReceiver {
        FileReceiver { file: Arc::new(file), position: at }
    }

    /// Creates (or truncates) `path` and writes from its start.
    pub fn create(path: impl AsRef<Path>) -> io::Result<FileReceiver> {
        Ok(FileReceiver::new(File::create(path)?, 0))
    }

    /// Where the next byte goes: the start offset plus every byte written.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The file.
    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// Writes `payload` at [`FileReceiver::position`] and advances it; the payload is dropped
    /// once written. A file-region segment (a payload made locally) is read and written.
    pub async fn write(&mut self, payload: Payload) -> io::Result<()> {
        let file = self.file.clone();
        let at = self.position;
        let len = payload.len() as u64;
        tokio::task::spawn_blocking(move || write_at(&file, &payload, at))
            .await
            .map_err(|e| io::Error::other(format!("file write task failed: {e}")))??;
        self.position += len;
        Ok(())
    }

    /// Receives the next item of `source` and writes its attachments into the file, in order;
    /// returns the item (`None` at the stream's clean end), or why it stopped: the stream's
    /// error, or the file's.
    pub async fn recv_from<T, C: Decode<T>>(
        &mut self,
        source: &mut Source<T, C>,
    ) -> Option<Result<T, ReceiveError>> {
        let (item, attachments) = match source.recv_with().await? {
            Ok(x) => x,
            Err(e) => return Some(Err(ReceiveError::Call(e))),
        };
        for a in attachments {
            if let Err(e) = self.write(a).await {
                return Some(Err(ReceiveError::Write(e)));
            }
        }
        Some(Ok(item))
    }

    /// Flushes the file's data and metadata to the disk (`fsync`).
    pub async fn sync_all(&self) -> io::Result<()> {
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || file.sync_all())
            .await
            .map_err(|e| io::Error::other(format!("fsync task failed: {e}")))?
    }
}

/// Why [`FileReceiver::recv_from`] stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiveError {
    /// The stream ended with an error (the call failed, the connection was lost).
    #[error(transparent)]
    Call(#[from] CallError),
    /// Writing into the file failed.
    #[error("writing the received bytes failed: {0}")]
    Write(#[from] io::Error),
}

fn write_at(file: &File, payload: &Payload, mut at: u64) -> io::Result<()> {
    for s in payload.segments() {
        match s {
            Segment::File(region) => {
                let bytes = region.read_to_bytes()?;
                write_all_at(file, &bytes, at)?;
            }
            s => write_all_at(file, s.memory().unwrap_or_default(), at)?,
        }
        at += s.len() as u64;
    }
    Ok(())
}

#[cfg(unix)]
fn write_all_at(file: &File, buf: &[u8], at: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, at)
}

#[cfg(windows)]
fn write_all_at(file: &File, mut buf: &[u8], mut at: u64) -> io::Result<()> {
    while !buf.is_empty() {
        let n = std::os::windows::fs::FileExt::seek_write(file, buf, at)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
        at += n as u64;
    }
    Ok(())
}
