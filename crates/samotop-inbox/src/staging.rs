//! [`Staging`]: a message compressed (zstd) as it streams in, in memory up to a bound and then
//! in an unlinked temporary file that holds only ciphertext ([`SealedFile`]), until the
//! store's commit takes it in pieces.

use std::io::{self, Read, Write};

use samotop_core::SealedFile;

/// Compressed bytes kept in memory before the staging moves into a temporary file.
const SPILL_AT: usize = 1024 * 1024;
/// The compressed message is stored in pieces of this size (one row each).
pub(crate) const PIECE: usize = 1024 * 1024;
/// zstd level: fast, and most mail compresses 3-5x at it.
const LEVEL: i32 = 3;

/// The compressed stream's sink: memory, then a [`SealedFile`] (so no plaintext of a big
/// message reaches the disk before the store has it; the store's own encryption is the
/// operator's choice of database, not ours).
#[derive(Debug, Default)]
pub(crate) struct Spill {
    memory: Vec<u8>,
    file: Option<SealedFile>,
    len: u64,
}

impl Write for Spill {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.file.is_none() && self.memory.len() + buf.len() > SPILL_AT {
            let file = SealedFile::new()?;
            let mut memory = std::mem::take(&mut self.memory);
            file.write_all_at(&mut memory, 0)?;
            self.file = Some(file);
        }
        match &self.file {
            Some(file) => file.write_all_at(&mut buf.to_vec(), self.len)?,
            None => self.memory.extend_from_slice(buf),
        }
        self.len += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Spill {
    /// Compressed length.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// True while the compressed data is in memory (no temporary file yet).
    pub(crate) fn in_memory(&self) -> bool {
        self.file.is_none()
    }

    /// How many pieces [`piece`](Spill::piece) gives.
    pub(crate) fn piece_count(&self) -> u64 {
        self.len.div_ceil(PIECE as u64)
    }

    /// Piece `index` (at most [`PIECE`] bytes), or `None` past the end. From memory, or a
    /// read of the temporary file (blocking: call it off the async threads then).
    pub(crate) fn piece(&mut self, index: u64) -> io::Result<Option<Vec<u8>>> {
        let Some(offset) = index.checked_mul(PIECE as u64).filter(|o| *o < self.len) else {
            return Ok(None);
        };
        let mut pieces = Pieces {
            spill: self,
            offset,
        };
        pieces.next_piece()
    }

    /// The pieces in order, each at most [`PIECE`] bytes, read one at a time.
    pub(crate) fn pieces(&mut self) -> Pieces<'_> {
        Pieces {
            spill: self,
            offset: 0,
        }
    }
}

/// Iterates over a [`Spill`]'s pieces.
pub(crate) struct Pieces<'a> {
    spill: &'a mut Spill,
    offset: u64,
}

impl Pieces<'_> {
    /// The next piece, or `None` at the end.
    pub(crate) fn next_piece(&mut self) -> io::Result<Option<Vec<u8>>> {
        if self.offset >= self.spill.len {
            return Ok(None);
        }
        let want = (self.spill.len - self.offset).min(PIECE as u64) as usize;
        let piece = match &self.spill.file {
            None => {
                let start = self.offset as usize;
                self.spill.memory[start..start + want].to_vec()
            }
            Some(file) => {
                let mut buf = vec![0; want];
                file.read_exact_at(&mut buf, self.offset)?;
                buf
            }
        };
        self.offset += want as u64;
        Ok(Some(piece))
    }
}

/// A message being received: compressed as it comes.
pub(crate) struct Staging {
    encoder: zstd::stream::write::Encoder<'static, Spill>,
    size: u64,
}

impl std::fmt::Debug for Staging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staging")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Staging {
    /// An empty staging.
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Staging {
            encoder: zstd::stream::write::Encoder::new(Spill::default(), LEVEL)?,
            size: 0,
        })
    }

    /// Appends message bytes. CPU work (compression) and, past 1 MiB of compressed data,
    /// writes to the page cache of an unlinked file.
    pub(crate) fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.encoder.write_all(chunk)?;
        self.size += chunk.len() as u64;
        Ok(())
    }

    /// The size received so far.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Ends the stream: the compressed message.
    pub(crate) fn finish(self) -> io::Result<Spill> {
        self.encoder.finish()
    }
}

/// Decompresses stored pieces, at most `max` bytes of output.
pub(crate) fn decompress(pieces: &[Vec<u8>], max: usize) -> io::Result<Vec<u8>> {
    let reader = Chain {
        pieces,
        index: 0,
        pos: 0,
    };
    let decoder = zstd::stream::read::Decoder::new(reader)?;
    let mut out = Vec::new();
    decoder.take(max as u64).read_to_end(&mut out)?;
    Ok(out)
}

struct Chain<'a> {
    pieces: &'a [Vec<u8>],
    index: usize,
    pos: usize,
}

impl Read for Chain<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(piece) = self.pieces.get(self.index) {
            if self.pos < piece.len() {
                let n = (piece.len() - self.pos).min(buf.len());
                buf[..n].copy_from_slice(&piece[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            self.index += 1;
            self.pos = 0;
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(data: &[u8]) {
        let mut staging = Staging::new().expect("staging");
        for chunk in data.chunks(65536) {
            staging.write(chunk).expect("write");
        }
        assert_eq!(staging.size(), data.len() as u64);
        let mut spill = staging.finish().expect("finish");
        assert_eq!(spill.in_memory(), spill.len() <= SPILL_AT as u64);
        let mut pieces = Vec::new();
        let mut it = spill.pieces();
        while let Some(p) = it.next_piece().expect("piece") {
            assert!(p.len() <= PIECE);
            pieces.push(p);
        }
        assert_eq!(spill.piece_count(), pieces.len() as u64);
        for (i, p) in pieces.iter().enumerate() {
            assert_eq!(spill.piece(i as u64).expect("piece").as_ref(), Some(p));
        }
        assert_eq!(
            spill.piece(pieces.len() as u64).expect("past the end"),
            None
        );
        assert_eq!(decompress(&pieces, usize::MAX).expect("decompress"), data);
        let head = decompress(&pieces, 10).expect("decompress head");
        assert_eq!(head, &data[..data.len().min(10)]);
    }

    #[test]
    fn small_and_big_messages_come_back_exactly() {
        round_trip(b"");
        round_trip(b"Subject: hi\r\n\r\nhello\r\n");
        // Incompressible: 3 MiB of pseudo-random bytes spill into the file, in 3+ pieces.
        let mut x: u32 = 1;
        let noise: Vec<u8> = (0..3 * 1024 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        round_trip(&noise);
    }
}
