//! [`Spool`]: a message held while end-of-data checks decide, in memory up to a bound and then
//! in an unlinked temporary file that holds only ciphertext.

use std::io;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::SealedFile;

/// The whole message as the client sent it (dot-unstuffed), held until the end-of-data
/// checks ([`DataCheck`](crate::DataCheck)) have decided, then streamed into the backend.
///
/// Memory is bounded by construction: up to `memory_limit` bytes stay in memory; past that the
/// spool moves into a [`SealedFile`] (unlinked, in `TMPDIR`), so a 100 MB message costs at
/// most `memory_limit` of anonymous memory. What goes to the file is encrypted with ChaCha20
/// under a key made for this message and kept only in memory, so no plaintext of the message
/// ever reaches the disk through the spool (DESIGN.md: encryption at rest means no plaintext
/// in a spool), and the file is gone when the spool is dropped, whatever happens.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use samotop_core::Spool;
/// let mut spool = Spool::new(4);
/// spool.write(b"Subject: hi\r\n\r\n").await?; // past 4 bytes: into the file
/// spool.write(b"Hello\r\n").await?;
/// let mut reader = spool.reader();
/// let mut all = Vec::new();
/// while let Some(chunk) = reader.next_chunk(5).await? {
///     all.extend_from_slice(&chunk);
/// }
/// assert_eq!(all, b"Subject: hi\r\n\r\nHello\r\n");
/// # Ok::<(), std::io::Error>(()) }).unwrap();
/// ```
pub struct Spool {
    /// What is in memory, in order: whole chunks taken as they came ([`Spool::push`]), then
    /// `tail`, where small writes gather.
    pieces: Vec<Bytes>,
    tail: BytesMut,
    /// Bytes in `pieces` and `tail`.
    in_memory: usize,
    memory_limit: usize,
    file: Option<Arc<SealedFile>>,
    len: u64,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("len", &self.len)
            .field("in_file", &self.file.is_some())
            .finish_non_exhaustive()
    }
}

impl Spool {
    /// An empty spool that keeps up to `memory_limit` bytes in memory.
    pub fn new(memory_limit: usize) -> Self {
        Spool {
            pieces: Vec::new(),
            tail: BytesMut::new(),
            in_memory: 0,
            memory_limit,
            file: None,
            len: 0,
        }
    }

    /// Bytes held.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True once the spool moved into its temporary file.
    pub fn in_file(&self) -> bool {
        self.file.is_some()
    }

    /// Appends `chunk`, copying it. The move into the file and the writes to it run on
    /// tokio's blocking threads.
    ///
    /// # Errors
    ///
    /// The temporary file cannot be made or written (a full disk: `StorageFull`).
    pub async fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        if self.fits(chunk.len()) {
            self.tail.extend_from_slice(chunk);
            self.in_memory += chunk.len();
            self.len += chunk.len() as u64;
            return Ok(());
        }
        self.write_to_file(chunk).await
    }

    /// Appends `chunk` without copying it while the spool is in memory: the reader hands
    /// the same bytes back. For whole chunks (a session's data); small writes are better
    /// gathered by [`Spool::write`].
    ///
    /// # Errors
    ///
    /// As [`Spool::write`].
    pub async fn push(&mut self, chunk: Bytes) -> io::Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        if self.fits(chunk.len()) {
            if !self.tail.is_empty() {
                self.pieces.push(self.tail.split().freeze());
            }
            self.in_memory += chunk.len();
            self.len += chunk.len() as u64;
            self.pieces.push(chunk);
            return Ok(());
        }
        self.write_to_file(&chunk).await
    }

    /// True when `more` bytes still fit in memory.
    fn fits(&self, more: usize) -> bool {
        self.file.is_none() && self.in_memory + more <= self.memory_limit
    }

    /// Writes `chunk` to the file, after what is still in memory (moved there first).
    async fn write_to_file(&mut self, chunk: &[u8]) -> io::Result<()> {
        let mut plain = BytesMut::with_capacity(self.in_memory + chunk.len());
        for piece in self.pieces.drain(..) {
            plain.extend_from_slice(&piece);
        }
        plain.extend_from_slice(&self.tail.split());
        self.in_memory = 0;
        plain.extend_from_slice(chunk);
        let file = match &self.file {
            Some(file) => file.clone(),
            None => {
                let file = Arc::new(blocking(SealedFile::new).await?);
                self.file = Some(file.clone());
                file
            }
        };
        // The bytes in memory (written before the move) start at 0; the rest at the end.
        let offset = self.len - (plain.len() - chunk.len()) as u64;
        blocking(move || file.write_all_at(&mut plain, offset)).await?;
        self.len += chunk.len() as u64;
        Ok(())
    }

    /// A reader from the start; several may read at once, the spool is not changed.
    pub fn reader(&self) -> SpoolReader<'_> {
        SpoolReader {
            spool: self,
            offset: 0,
            piece: 0,
            at: 0,
        }
    }
}

/// Reads a [`Spool`] from its start, chunk by chunk.
#[derive(Debug)]
pub struct SpoolReader<'a> {
    spool: &'a Spool,
    offset: u64,
    /// In memory: the piece being read (`pieces.len()` for the tail) and the offset in it.
    piece: usize,
    at: usize,
}

impl SpoolReader<'_> {
    /// The next chunk of at most `max` bytes (at least 1), or `None` at the end.
    ///
    /// # Errors
    ///
    /// Reading the temporary file failed.
    pub async fn next_chunk(&mut self, max: usize) -> io::Result<Option<Bytes>> {
        let spool = self.spool;
        if self.offset >= spool.len {
            return Ok(None);
        }
        let want = (spool.len - self.offset).min(max.max(1) as u64) as usize;
        let Some(file) = spool.file.clone() else {
            return Ok(Some(self.read_memory(want)));
        };
        let offset = self.offset;
        let buf = blocking(move || {
            let mut buf = vec![0u8; want];
            file.read_exact_at(&mut buf, offset)?;
            Ok(buf)
        })
        .await?;
        self.offset += want as u64;
        Ok(Some(Bytes::from(buf)))
    }
}

impl SpoolReader<'_> {
    /// Up to `want` (> 0) bytes from memory, where at least that many are left: a slice of a
    /// piece (no copy), or a copy from the tail.
    fn read_memory(&mut self, want: usize) -> Bytes {
        let pieces = &self.spool.pieces;
        // Bounded: each turn moves past an (empty-at-this-offset) piece of a finite list.
        while self.piece < pieces.len() && self.at >= pieces[self.piece].len() {
            self.piece += 1;
            self.at = 0;
        }
        let out = match pieces.get(self.piece) {
            Some(piece) => {
                let n = want.min(piece.len() - self.at);
                piece.slice(self.at..self.at + n)
            }
            None => {
                let tail = &self.spool.tail;
                let n = want.min(tail.len() - self.at);
                Bytes::copy_from_slice(&tail[self.at..self.at + n])
            }
        };
        self.at += out.len();
        self.offset += out.len() as u64;
        out
    }
}

async fn blocking<T: Send + 'static>(
    job: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(job)
        .await
        .map_err(|e| io::Error::other(format!("spool task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(spool: &Spool, max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut r = spool.reader();
        for _ in 0..1_000_000 {
            match r.next_chunk(max).await.expect("read") {
                Some(c) => out.extend_from_slice(&c),
                None => return out,
            }
        }
        panic!("the reader does not end");
    }

    #[tokio::test]
    async fn memory_then_file_reads_back_exactly() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for limit in [0, 1, 1000, 150_000, 1 << 20] {
            let mut spool = Spool::new(limit);
            for part in data.chunks(4097) {
                spool.write(part).await.expect("write");
            }
            assert_eq!(spool.len(), data.len() as u64);
            assert_eq!(spool.in_file(), limit < data.len(), "limit {limit}");
            for max in [1, 333, 65536] {
                if max == 1 && spool.in_file() {
                    continue; // a blocking-pool trip per byte: slow, and covered by 333
                }
                assert_eq!(read_all(&spool, max).await, data, "limit {limit} max {max}");
            }
        }
    }

    #[tokio::test]
    async fn pushed_and_written_pieces_read_back_in_order() {
        let data: Vec<u8> = (0..50_000u32).map(|i| (i * 13 % 253) as u8).collect();
        for limit in [0, 7000, 30_000, 1 << 20] {
            let mut spool = Spool::new(limit);
            // Whole chunks and small writes, interleaved, as a session and a writer mix them.
            for (i, part) in data.chunks(3001).enumerate() {
                if i % 3 == 2 {
                    for small in part.chunks(100) {
                        spool.write(small).await.expect("write");
                    }
                } else {
                    spool
                        .push(Bytes::copy_from_slice(part))
                        .await
                        .expect("push");
                }
            }
            assert_eq!(spool.len(), data.len() as u64);
            assert_eq!(spool.in_file(), limit < data.len(), "limit {limit}");
            for max in [1, 333, 4096, 65536] {
                if max == 1 && spool.in_file() {
                    continue; // a blocking-pool trip per byte
                }
                assert_eq!(read_all(&spool, max).await, data, "limit {limit} max {max}");
            }
        }
    }

    #[tokio::test]
    async fn a_pushed_chunk_comes_back_without_a_copy() {
        let mut spool = Spool::new(1 << 20);
        let chunk = Bytes::from(vec![7u8; 10_000]);
        spool.push(chunk.clone()).await.expect("push");
        let mut reader = spool.reader();
        let back = reader
            .next_chunk(65536)
            .await
            .expect("read")
            .expect("a chunk");
        assert_eq!(back.as_ptr(), chunk.as_ptr());
        assert_eq!(back.len(), chunk.len());
        assert!(reader.next_chunk(65536).await.expect("read").is_none());
    }

    #[tokio::test]
    async fn the_file_holds_no_plaintext() {
        let mut spool = Spool::new(0);
        let secret = b"Subject: the launch codes are 0000\r\n".repeat(100);
        spool.write(&secret).await.expect("write");
        let file = spool.file.clone().expect("in a file");
        let mut raw = vec![0u8; secret.len()];
        std::os::unix::fs::FileExt::read_exact_at(file.raw(), &mut raw, 0).expect("read raw");
        assert_ne!(raw, secret);
        assert!(!raw.windows(6).any(|w| w == b"launch"));
        assert_eq!(read_all(&spool, 1000).await, secret);
    }
}
