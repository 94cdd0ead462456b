//! [`SealedFile`]: an unlinked temporary file that holds only ciphertext.

use std::fs::File;
use std::io;

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};

/// An unlinked temporary file (`tempfile::tempfile`, in `TMPDIR`) whose bytes are encrypted
/// with ChaCha20 under a random key made for this file and kept only in memory: what is
/// written reaches the disk as ciphertext only, and the file is gone when it is dropped,
/// whatever happens. The key is overwritten when the file is dropped.
///
/// Reads and writes are positional (`pread`/`pwrite`) and blocking: call them off the async
/// threads. [`Spool`](crate::Spool) keeps a message in one past its memory bound; a backend
/// that stages data of its own on disk can use it the same way.
///
/// ```
/// use samotop_core::SealedFile;
/// let file = SealedFile::new()?;
/// let mut data = b"Subject: secret".to_vec();
/// file.write_all_at(&mut data, 0)?; // `data` is ciphertext now
/// let mut back = vec![0; 15];
/// file.read_exact_at(&mut back, 0)?;
/// assert_eq!(back, b"Subject: secret");
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct SealedFile {
    file: File,
    key: [u8; 32],
    nonce: [u8; 12],
}

impl std::fmt::Debug for SealedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedFile").finish_non_exhaustive()
    }
}

impl SealedFile {
    /// A new, empty file under a new random key.
    ///
    /// # Errors
    ///
    /// No temporary file can be made, or the system has no randomness to give.
    pub fn new() -> io::Result<Self> {
        let mut key = [0u8; 32];
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut key).map_err(io::Error::other)?;
        getrandom::fill(&mut nonce).map_err(io::Error::other)?;
        Ok(SealedFile {
            file: tempfile::tempfile()?,
            key,
            nonce,
        })
    }

    /// Encrypts `data` in place (it is ciphertext afterwards) and writes it at `offset`.
    ///
    /// # Errors
    ///
    /// The write failed (a full disk: `StorageFull`).
    pub fn write_all_at(&self, data: &mut [u8], offset: u64) -> io::Result<()> {
        self.cipher(offset).apply_keystream(data);
        std::os::unix::fs::FileExt::write_all_at(&self.file, data, offset)
    }

    /// Reads `buf.len()` bytes at `offset` and decrypts them.
    ///
    /// # Errors
    ///
    /// The read failed or the file is shorter.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, offset)?;
        self.cipher(offset).apply_keystream(buf);
        Ok(())
    }

    /// The file itself, for tests that look at what reached the disk.
    #[cfg(test)]
    pub(crate) fn raw(&self) -> &File {
        &self.file
    }

    fn cipher(&self, offset: u64) -> ChaCha20 {
        let mut cipher = ChaCha20::new(&self.key.into(), &self.nonce.into());
        cipher.seek(offset);
        cipher
    }
}

impl Drop for SealedFile {
    fn drop(&mut self) {
        // Not a guarantee (the compiler may have copied the key), but the file's own copy
        // does not outlive it. `black_box` keeps the stores from being optimised away.
        self.key = [0; 32];
        self.nonce = [0; 12];
        std::hint::black_box(&self.key);
        std::hint::black_box(&self.nonce);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom};

    /// What reaches the file is not the plaintext; it reads back exactly at any offset; two
    /// files of the same bytes hold different ciphertext (a key each).
    #[test]
    fn only_ciphertext_reaches_the_file() {
        let plain: Vec<u8> = b"Subject: secret\r\n\r\n".repeat(1000);
        let a = SealedFile::new().expect("file");
        let b = SealedFile::new().expect("file");
        let (head, tail) = plain.split_at(7001);
        a.write_all_at(&mut head.to_vec(), 0).expect("write");
        a.write_all_at(&mut tail.to_vec(), 7001).expect("write");
        b.write_all_at(&mut plain.clone(), 0).expect("write");
        let raw = |f: &SealedFile| {
            let mut file = f.file.try_clone().expect("clone");
            file.seek(SeekFrom::Start(0)).expect("seek");
            let mut v = Vec::new();
            file.read_to_end(&mut v).expect("read");
            v
        };
        let (ra, rb) = (raw(&a), raw(&b));
        assert_eq!(ra.len(), plain.len());
        assert!(!ra.windows(6).any(|w| w == b"secret"));
        assert_ne!(ra, rb);
        let mut back = vec![0; plain.len()];
        a.read_exact_at(&mut back, 0).expect("read");
        assert_eq!(back, plain);
        let mut mid = vec![0; 100];
        a.read_exact_at(&mut mid, 6950).expect("read");
        assert_eq!(mid, &plain[6950..7050]);
    }
}
