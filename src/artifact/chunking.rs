//! Content-defined chunking of root file system images for chunked artifacts
//! (docs/artifacts.md, "Chunked rootfs-image artifacts").
//!
//! Cut points come from FastCDC 2020 (the `fastcdc` crate, normalisation
//! level 1, the crate's default gear table), then move up to the next
//! multiple of the alignment from the start of the image: the block size
//! of the image's file system (4 KiB, or 1 KiB for the ext4 images that
//! mke2fs makes below 512 MiB), since file systems change whole blocks and
//! move files by whole blocks. Boundaries depend on the content alone, so the
//! device can chunk its own partition the same way and find the chunks it
//! already holds. The parameters are recorded in the chunk index; changing
//! this algorithm needs a new chunker id there.

use std::io::{self, Read};

use fastcdc::v2020::{Normalization, cut, select_masks};

/// Chunk boundaries are multiples of this many bytes from the image start
/// unless the image's file system has smaller blocks.
pub const ALIGN: u32 = 4096;
/// Smallest and largest average chunk size the writer accepts.
pub const MIN_AVERAGE: u32 = 8 << 10;
pub const MAX_AVERAGE: u32 = 1 << 20;
/// The average chunk size when none is asked for: the size at which
/// `scripts/bench-delta` met the fetch goals with the least overhead
/// (docs/measured.md, "Adaptive delta benchmark").
pub const DEFAULT_AVERAGE: u32 = 32 << 10;

/// The chunker's sizes, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
    /// Cut points are rounded up to a multiple of this (a power of two,
    /// 1 to [`ALIGN`]).
    pub align: u32,
}

impl ChunkParams {
    /// The sizes for an average of `avg` bytes: a quarter and four times
    /// that as the bounds (FastCDC's usual spread).
    pub fn for_average(avg: u32) -> Result<ChunkParams, String> {
        if !avg.is_power_of_two() || !(MIN_AVERAGE..=MAX_AVERAGE).contains(&avg) {
            return Err(format!(
                "average chunk size {avg} must be a power of two from {} KiB to {} KiB",
                MIN_AVERAGE >> 10,
                MAX_AVERAGE >> 10
            ));
        }
        Ok(ChunkParams {
            min: avg / 4,
            avg,
            max: avg * 4,
            align: ALIGN,
        })
    }

    /// The same sizes with cut points rounded to `align` bytes.
    pub fn aligned_to(self, align: u32) -> Result<ChunkParams, String> {
        if !align.is_power_of_two() || align > ALIGN {
            return Err(format!(
                "chunk alignment {align} must be a power of two up to {ALIGN}"
            ));
        }
        Ok(ChunkParams { align, ..self })
    }

    /// Whether a chunk index's recorded sizes are ones this chunker can
    /// reproduce.
    pub fn check(&self) -> Result<(), String> {
        let expected = ChunkParams::for_average(self.avg)?.aligned_to(self.align)?;
        if *self != expected {
            return Err(format!(
                "chunk sizes min {} avg {} max {} are not min = avg/4, max = avg*4",
                self.min, self.avg, self.max
            ));
        }
        Ok(())
    }
}

/// Finds chunk boundaries; see the module documentation.
pub struct Chunker {
    params: ChunkParams,
    mask_s: u64,
    mask_l: u64,
}

impl Chunker {
    pub fn new(params: ChunkParams) -> Chunker {
        let (mask_s, mask_l) = select_masks(params.avg as usize, Normalization::Level1);
        Chunker {
            params,
            mask_s,
            mask_l,
        }
    }

    pub fn params(&self) -> ChunkParams {
        self.params
    }

    /// The length of the chunk that starts at `window[0]`. `window` holds
    /// up to `max` bytes: exactly `max` unless the image ends within it.
    pub fn cut(&self, window: &[u8]) -> usize {
        let max = self.params.max as usize;
        let window = &window[..window.len().min(max)];
        let (_, at) = cut(
            window,
            self.params.min as usize,
            self.params.avg as usize,
            max,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
        );
        let align = self.params.align as usize;
        at.div_ceil(align).saturating_mul(align).min(window.len())
    }

    /// Reads `input` to its end and hands each chunk to `each`, in order.
    /// Memory: two maximum-size chunks.
    pub fn for_each_chunk<R: Read, E: From<io::Error>>(
        &self,
        mut input: R,
        mut each: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let max = self.params.max as usize;
        let mut buf = vec![0u8; 2 * max];
        let mut start = 0;
        let mut end = 0;
        let mut eof = false;
        loop {
            if !eof && end - start < max {
                buf.copy_within(start..end, 0);
                end -= start;
                start = 0;
                while end < buf.len() {
                    match input.read(&mut buf[end..]) {
                        Ok(0) => {
                            eof = true;
                            break;
                        }
                        Ok(n) => end += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            if start == end {
                return Ok(());
            }
            let len = self.cut(&buf[start..end]);
            each(&buf[start..start + len])?;
            start += len;
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift), so that the chunker finds
/// cut points; for the tests of the chunking and of adaptive installs.
#[cfg(test)]
pub(crate) fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(data: &[u8], avg: u32) -> Vec<Vec<u8>> {
        let chunker = Chunker::new(ChunkParams::for_average(avg).unwrap());
        let mut out = Vec::new();
        chunker
            .for_each_chunk(data, |c| -> io::Result<()> {
                out.push(c.to_vec());
                Ok(())
            })
            .unwrap();
        out
    }

    #[test]
    fn chunks_cover_the_input_aligned_and_within_bounds() {
        let data = noise(3 << 20, 7);
        let params = ChunkParams::for_average(32 << 10).unwrap();
        let got = chunks(&data, 32 << 10);
        assert_eq!(got.concat(), data);
        let (last, rest) = got.split_last().unwrap();
        for c in rest {
            assert_eq!(c.len() % ALIGN as usize, 0);
            assert!(c.len() >= params.min as usize && c.len() <= params.max as usize);
        }
        assert!(!last.is_empty() && last.len() <= params.max as usize);
        let mean = data.len() / got.len();
        assert!(
            (16 << 10..=64 << 10).contains(&mean),
            "mean chunk {mean} bytes"
        );
    }

    #[test]
    fn an_inserted_block_changes_only_nearby_chunks() {
        let data = noise(4 << 20, 11);
        let mut shifted = data[..1 << 20].to_vec();
        shifted.extend_from_slice(&noise(ALIGN as usize, 99));
        shifted.extend_from_slice(&data[1 << 20..]);
        let a = chunks(&data, 32 << 10);
        let b = chunks(&shifted, 32 << 10);
        let common = b.iter().filter(|c| a.contains(c)).count();
        assert!(
            common + 4 >= b.len(),
            "{common} of {} chunks survive a 4 KiB insertion",
            b.len()
        );
    }

    #[test]
    fn empty_and_tiny_inputs() {
        assert!(chunks(&[], 16 << 10).is_empty());
        assert_eq!(chunks(&[1, 2, 3], 16 << 10), vec![vec![1, 2, 3]]);
    }

    #[test]
    fn averages_are_checked() {
        assert!(ChunkParams::for_average(3 << 10).is_err());
        assert!(ChunkParams::for_average(48 << 10).is_err());
        assert!(ChunkParams::for_average(2 << 20).is_err());
        let p = ChunkParams::for_average(64 << 10).unwrap();
        assert_eq!((p.min, p.max), (16 << 10, 256 << 10));
        assert!(p.check().is_ok());
        assert!(ChunkParams { min: 4096, ..p }.check().is_err());
        assert_eq!(p.aligned_to(1024).unwrap().align, 1024);
        assert!(p.aligned_to(1024).unwrap().check().is_ok());
        assert!(p.aligned_to(3000).is_err() && p.aligned_to(8192).is_err());
    }
}
