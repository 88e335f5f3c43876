//! [`SnapshotFile`]: a snapshot file as openraft moves it, read and written
//! in place rather than on tokio's blocking pool. Snapshot files are read
//! and written sequentially in small buffered pieces, like the RocksDB
//! writes beside them; doing it in place keeps the order of events on one
//! thread fixed, which the shard simulation ([`super::sim`]) needs to
//! replay a seed exactly.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

/// An open snapshot file.
#[derive(Debug)]
pub struct SnapshotFile {
    file: std::fs::File,
    /// Where the last `start_seek` went (what `poll_complete` reports).
    seeked: Option<io::Result<u64>>,
}

impl SnapshotFile {
    /// Opens `path` to read.
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(Self::from(std::fs::File::open(path)?))
    }

    /// Creates `path` (replacing it) to write.
    pub fn create(path: &Path) -> io::Result<Self> {
        Ok(Self::from(std::fs::File::create(path)?))
    }

    /// Creates `path`, which must not exist, to write and read back.
    pub fn create_new(path: &Path) -> io::Result<Self> {
        let f = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(path)?;
        Ok(Self::from(f))
    }

    /// Makes what was written durable.
    pub fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all()
    }
}

/// Makes the entries of directory `dir` durable (a file created in it and
/// synced can still vanish in a power loss until its directory is synced).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl From<std::fs::File> for SnapshotFile {
    fn from(file: std::fs::File) -> Self {
        SnapshotFile { file, seeked: None }
    }
}

impl AsyncRead for SnapshotFile {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self.get_mut().file.read(buf.initialize_unfilled())?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for SnapshotFile {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(self.get_mut().file.write(buf))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_mut().file.flush())
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncSeek for SnapshotFile {
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        let me = self.get_mut();
        me.seeked = Some(me.file.seek(position));
        Ok(())
    }

    fn poll_complete(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        let me = self.get_mut();
        Poll::Ready(me.seeked.take().unwrap_or_else(|| me.file.stream_position()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

    #[tokio::test]
    async fn writes_seeks_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.snap");
        let mut f = SnapshotFile::create_new(&path).unwrap();
        f.write_all(b"hello snapshot").await.unwrap();
        f.flush().await.unwrap();
        assert_eq!(f.seek(SeekFrom::Start(6)).await.unwrap(), 6);
        let mut s = String::new();
        f.read_to_string(&mut s).await.unwrap();
        assert_eq!(s, "snapshot");
        assert!(SnapshotFile::create_new(&path).is_err(), "create_new refuses an existing file");
        let mut again = String::new();
        SnapshotFile::open(&path).unwrap().read_to_string(&mut again).await.unwrap();
        assert_eq!(again, "hello snapshot");
    }
}
