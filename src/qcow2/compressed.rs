//! Decompression of one qcow2 compressed cluster (formats.md §3).
//!
//! A compressed L2 entry names a host byte range that QEMU rounds up to whole 512-byte sectors,
//! so the input handed to [`decompress_cluster`] usually carries trailing bytes that belong to
//! nothing (or to the next compressed cluster). QEMU stops as soon as one cluster of output is
//! produced and requires exactly one cluster; this module does the same:
//!
//! - **deflate** (`compression_type` 0): raw deflate, no zlib header; QEMU writes it with a 4 KiB
//!   window (`windowBits -12`). The stream must end (its final block) after exactly one cluster.
//!   Back-references further than 4 KiB, which QEMU's zlib would refuse, are accepted here: the
//!   whole cluster is in the output buffer, so they are still well defined.
//! - **zstd** (`compression_type` 1): one or more zstd frames back to back (QEMU's
//!   `qcow2_zstd_decompress` loops over frames until the output is full); skippable frames are
//!   skipped. The frame that fills the cluster must end there.
//!
//! Nothing here allocates for deflate. The deflate state ([`InflateScratch`], about 11 KiB) lives on
//! the stack in [`decompress_cluster`]; callers with small stacks keep one in their own memory and
//! call [`decompress_cluster_with`]. No allocation-free zstd decoder exists in Rust today, so zstd
//! is decoded by `ruzstd` and only with the crate's `alloc` feature; without it a zstd cluster is a
//! typed error ([`CompressedError::ZstdNeedsAlloc`]). With `alloc`, the decoder's memory is bounded
//! by [`ZSTD_MAX_WINDOW`] plus one zstd block and the cluster, whatever the input claims.
//!
//! ```
//! use qluks::qcow2::compressed::{decompress_cluster, CompressedError, Compression};
//!
//! # fn main() -> Result<(), CompressedError> {
//! // A raw deflate stream for a 4 KiB cluster: one final "stored" block (deflate's
//! // uncompressed form: header byte, LEN, !LEN, data), as zlib may emit for random data,
//! // followed by padding up to the 512-byte sector as QEMU reads it.
//! let mut input = vec![0x01, 0x00, 0x10, 0xff, 0xef];
//! input.extend((0..4096u32).map(|i| (i % 251) as u8));
//! input.resize(input.len().next_multiple_of(512), 0);
//!
//! let deflate = Compression::from_type(0).expect("0 is deflate");
//! let mut cluster = [0u8; 4096];
//! decompress_cluster(deflate, &input, &mut cluster)?;
//! assert!(cluster.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
//!
//! // The stream must produce exactly one cluster: an 8 KiB cluster is refused.
//! let mut bigger = [0u8; 8192];
//! let err = decompress_cluster(deflate, &input, &mut bigger).unwrap_err();
//! assert!(matches!(err, CompressedError::TooLittleOutput { produced: 4096, expected: 8192, .. }));
//! # Ok(())
//! # }
//! ```

use core::fmt;

use miniz_oxide::inflate::core::{decompress, inflate_flags, DecompressorOxide};
use miniz_oxide::inflate::TINFLStatus;

/// The compression method of a qcow2 image (header field `compression_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Raw deflate (`compression_type` 0, the default and the only method of v2 images).
    Deflate,
    /// Zstandard (`compression_type` 1).
    Zstd,
}

impl Compression {
    /// The method named by a header's `compression_type` byte, if known.
    pub fn from_type(compression_type: u8) -> Option<Compression> {
        match compression_type {
            0 => Some(Compression::Deflate),
            1 => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// QEMU's name for the method (`zlib` / `zstd`, as in `-o compression_type=`).
    pub fn name(self) -> &'static str {
        match self {
            Compression::Deflate => "zlib",
            Compression::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Largest zstd window accepted. A frame inside a qcow2 cluster decodes to at most one cluster
/// (2 MiB at cluster_bits 21), and QEMU's compressor pledges the input size, so its windows never
/// exceed the cluster; the limit stops a hostile frame header from making the decoder reserve a
/// huge window.
pub const ZSTD_MAX_WINDOW: u64 = 8 << 20;

/// Why a compressed cluster could not be decompressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressedError {
    /// The input is not a valid stream of the method (bad block type, bad Huffman table,
    /// distance before the start, bad zstd magic or block...).
    Corrupt {
        /// The method.
        compression: Compression,
    },
    /// The input ended before the stream produced one cluster.
    Truncated {
        /// The method.
        compression: Compression,
        /// Bytes produced before the input ran out.
        produced: usize,
        /// The cluster size.
        expected: usize,
    },
    /// The stream ended properly but produced less than one cluster.
    TooLittleOutput {
        /// The method.
        compression: Compression,
        /// Bytes the stream decodes to.
        produced: usize,
        /// The cluster size.
        expected: usize,
    },
    /// The stream decodes to more than one cluster.
    TooMuchOutput {
        /// The method.
        compression: Compression,
        /// The cluster size.
        expected: usize,
    },
    /// The image uses zstd, which this build can only decode with the `alloc` feature.
    ZstdNeedsAlloc,
}

impl fmt::Display for CompressedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CompressedError::Corrupt { compression } => write!(f, "compressed cluster is not valid {compression} data"),
            CompressedError::Truncated { compression, produced, expected } => write!(
                f,
                "compressed cluster ({compression}) is truncated: input ended after {produced} of {expected} bytes"
            ),
            CompressedError::TooLittleOutput { compression, produced, expected } => write!(
                f,
                "compressed cluster ({compression}) decodes to {produced} bytes, less than the cluster size {expected}"
            ),
            CompressedError::TooMuchOutput { compression, expected } => {
                write!(f, "compressed cluster ({compression}) decodes to more than the cluster size {expected}")
            }
            CompressedError::ZstdNeedsAlloc => {
                f.write_str("image uses zstd compression, which needs qluks built with the `alloc` feature")
            }
        }
    }
}

impl core::error::Error for CompressedError {}

/// Deflate decoder state, reusable across clusters (about 11 KiB; see the module docs).
pub struct InflateScratch(DecompressorOxide);

impl InflateScratch {
    /// A fresh state.
    pub fn new() -> InflateScratch {
        InflateScratch(DecompressorOxide::new())
    }
}

impl Default for InflateScratch {
    fn default() -> Self {
        InflateScratch::new()
    }
}

impl fmt::Debug for InflateScratch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InflateScratch")
    }
}

/// Decompresses one cluster: fills all of `out` (the cluster) from `input` (the compressed bytes
/// as stored, trailing bytes allowed) or fails. The deflate state lives on the stack (~11 KiB).
pub fn decompress_cluster(c: Compression, input: &[u8], out: &mut [u8]) -> Result<(), CompressedError> {
    match c {
        Compression::Deflate => inflate_cluster(&mut InflateScratch::new(), input, out),
        Compression::Zstd => zstd_cluster(input, out),
    }
}

/// [`decompress_cluster`] with the deflate state in the caller's memory.
pub fn decompress_cluster_with(
    scratch: &mut InflateScratch,
    c: Compression,
    input: &[u8],
    out: &mut [u8],
) -> Result<(), CompressedError> {
    match c {
        Compression::Deflate => inflate_cluster(scratch, input, out),
        Compression::Zstd => zstd_cluster(input, out),
    }
}

fn inflate_cluster(scratch: &mut InflateScratch, input: &[u8], out: &mut [u8]) -> Result<(), CompressedError> {
    let compression = Compression::Deflate;
    let expected = out.len();
    scratch.0.init();
    // No TINFL_FLAG_HAS_MORE_INPUT: all the input there is, is here. Raw deflate: no zlib header.
    let flags = inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
    let (status, _consumed, produced) = decompress(&mut scratch.0, input, out, 0, flags);
    match status {
        TINFLStatus::Done if produced == expected => Ok(()),
        TINFLStatus::Done => Err(CompressedError::TooLittleOutput { compression, produced, expected }),
        TINFLStatus::HasMoreOutput => Err(CompressedError::TooMuchOutput { compression, expected }),
        TINFLStatus::FailedCannotMakeProgress | TINFLStatus::NeedsMoreInput => {
            Err(CompressedError::Truncated { compression, produced, expected })
        }
        _ => Err(CompressedError::Corrupt { compression }),
    }
}

#[cfg(not(feature = "alloc"))]
fn zstd_cluster(_input: &[u8], _out: &mut [u8]) -> Result<(), CompressedError> {
    Err(CompressedError::ZstdNeedsAlloc)
}

#[cfg(feature = "alloc")]
fn zstd_cluster(input: &[u8], out: &mut [u8]) -> Result<(), CompressedError> {
    use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
    use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};
    use ruzstd::io::Read;

    let compression = Compression::Zstd;
    let expected = out.len();
    let mut source = input;
    let mut produced = 0usize;
    let mut decoder = FrameDecoder::new();
    decoder.set_max_window_size(ZSTD_MAX_WINDOW);

    // Failures with the input used up are truncation; anything else is bad data.
    let fail = |source: &[u8], produced: usize| {
        if source.is_empty() {
            CompressedError::Truncated { compression, produced, expected }
        } else {
            CompressedError::Corrupt { compression }
        }
    };

    while produced < expected {
        if source.is_empty() {
            return Err(CompressedError::Truncated { compression, produced, expected });
        }
        match decoder.reset(&mut source) {
            Ok(()) => {}
            Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame { length, .. })) => {
                source = source.get(length as usize..).ok_or(CompressedError::Truncated {
                    compression,
                    produced,
                    expected,
                })?;
                continue;
            }
            Err(_) => return Err(fail(source, produced)),
        }
        // Decode block by block and drain as soon as bytes leave the window, so the decoder holds
        // at most one window plus one block, however long the frame claims to be.
        loop {
            let finished = decoder.is_finished();
            let ready = decoder.can_collect();
            if ready == 0 {
                if finished {
                    break;
                }
                decoder
                    .decode_blocks(&mut source, BlockDecodingStrategy::UptoBlocks(1))
                    .map_err(|_| fail(source, produced))?;
                continue;
            }
            if produced == expected {
                return Err(CompressedError::TooMuchOutput { compression, expected });
            }
            let n = decoder.read(&mut out[produced..]).map_err(|_| CompressedError::Corrupt { compression })?;
            produced += n;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A raw deflate stream of stored (uncompressed) blocks, the last one marked final.
    fn deflate_stored(chunks: &[&[u8]]) -> ([u8; 256], usize) {
        let mut s = [0u8; 256];
        let mut n = 0;
        for (i, chunk) in chunks.iter().enumerate() {
            s[n] = u8::from(i + 1 == chunks.len()); // BFINAL, BTYPE 00 (stored)
            let len = chunk.len() as u16;
            s[n + 1..n + 3].copy_from_slice(&len.to_le_bytes());
            s[n + 3..n + 5].copy_from_slice(&(!len).to_le_bytes());
            s[n + 5..n + 5 + chunk.len()].copy_from_slice(chunk);
            n += 5 + chunk.len();
        }
        (s, n)
    }

    /// A zstd frame with one raw block (single segment, one-byte content size).
    fn zstd_raw_frame(data: &[u8]) -> ([u8; 128], usize) {
        let mut s = [0u8; 128];
        s[..4].copy_from_slice(&0xFD2F_B528u32.to_le_bytes());
        s[4] = 0x20; // single segment, 1-byte frame content size, no checksum, no dictionary
        s[5] = data.len() as u8;
        let header = ((data.len() as u32) << 3) | 1; // last block, raw
        s[6..9].copy_from_slice(&header.to_le_bytes()[..3]);
        s[9..9 + data.len()].copy_from_slice(data);
        (s, 9 + data.len())
    }

    #[test]
    fn deflate_fills_exactly_one_cluster_and_ignores_trailing_input() {
        let (mut s, n) = deflate_stored(&[b"abcd", b"efgh"]);
        s[n..n + 7].copy_from_slice(b"garbage");
        let mut out = [0u8; 8];
        decompress_cluster(Compression::Deflate, &s[..n + 7], &mut out).unwrap();
        assert_eq!(&out, b"abcdefgh");
    }

    #[test]
    fn deflate_final_empty_block_after_a_full_cluster_is_fine() {
        // zlib may close a stream with an empty final block once the output is complete.
        let (s, n) = deflate_stored(&[b"abcdefgh", b""]);
        let mut out = [0u8; 8];
        decompress_cluster(Compression::Deflate, &s[..n], &mut out).unwrap();
        assert_eq!(&out, b"abcdefgh");
    }

    #[test]
    fn deflate_with_less_than_a_cluster_is_too_little_output() {
        let (s, n) = deflate_stored(&[b"abcd"]);
        let mut out = [0u8; 8];
        assert_eq!(
            decompress_cluster(Compression::Deflate, &s[..n], &mut out),
            Err(CompressedError::TooLittleOutput { compression: Compression::Deflate, produced: 4, expected: 8 })
        );
    }

    #[test]
    fn deflate_with_more_than_a_cluster_is_too_much_output() {
        let (s, n) = deflate_stored(&[b"abcdefghij"]);
        let mut out = [0u8; 8];
        assert_eq!(
            decompress_cluster(Compression::Deflate, &s[..n], &mut out),
            Err(CompressedError::TooMuchOutput { compression: Compression::Deflate, expected: 8 })
        );
    }

    #[test]
    fn deflate_cut_short_is_truncated() {
        let (s, n) = deflate_stored(&[b"abcd", b"efgh"]);
        let mut out = [0u8; 8];
        assert!(matches!(
            decompress_cluster(Compression::Deflate, &s[..n - 2], &mut out),
            Err(CompressedError::Truncated { compression: Compression::Deflate, expected: 8, .. })
        ));
        assert!(matches!(
            decompress_cluster(Compression::Deflate, &[], &mut out),
            Err(CompressedError::Truncated { produced: 0, .. })
        ));
    }

    #[test]
    fn deflate_reserved_block_type_is_corrupt() {
        let mut out = [0u8; 8];
        // BFINAL 1, BTYPE 11 (reserved).
        assert_eq!(
            decompress_cluster(Compression::Deflate, &[0x07, 0, 0, 0], &mut out),
            Err(CompressedError::Corrupt { compression: Compression::Deflate })
        );
    }

    #[test]
    fn deflate_stored_length_check_mismatch_is_corrupt() {
        let (mut s, n) = deflate_stored(&[b"abcdefgh"]);
        s[3] ^= 1; // NLEN no longer the complement of LEN
        let mut out = [0u8; 8];
        assert_eq!(
            decompress_cluster(Compression::Deflate, &s[..n], &mut out),
            Err(CompressedError::Corrupt { compression: Compression::Deflate })
        );
    }

    #[test]
    fn inflate_state_fits_the_documented_stack_budget() {
        // The module docs promise about 11 KiB on the stack for decompress_cluster.
        let size = core::mem::size_of::<InflateScratch>();
        assert!((8 * 1024..=12 * 1024).contains(&size), "InflateScratch is {size} bytes");
    }

    #[test]
    fn deflate_with_scratch_reuses_state_between_clusters() {
        let mut scratch = InflateScratch::new();
        let (s, n) = deflate_stored(&[b"abcdefgh"]);
        let mut out = [0u8; 8];
        let _ = decompress_cluster_with(&mut scratch, Compression::Deflate, &s[..3], &mut out);
        decompress_cluster_with(&mut scratch, Compression::Deflate, &s[..n], &mut out).unwrap();
        assert_eq!(&out, b"abcdefgh");
    }

    // Without `alloc` a zstd cluster is refused by name: tested in tests/no-alloc (its own
    // workspace), since the `std` self dev-dependency turns `alloc` on for every test here.

    #[cfg(feature = "alloc")]
    mod zstd {
        use super::*;

        #[test]
        fn zstd_frames_concatenate_until_the_cluster_is_full() {
            let (a, na) = zstd_raw_frame(b"abc");
            let (b, nb) = zstd_raw_frame(b"defgh");
            let mut s = [0u8; 64];
            s[..na].copy_from_slice(&a[..na]);
            s[na..na + nb].copy_from_slice(&b[..nb]);
            s[na + nb..na + nb + 5].copy_from_slice(b"trail");
            let mut out = [0u8; 8];
            decompress_cluster(Compression::Zstd, &s[..na + nb + 5], &mut out).unwrap();
            assert_eq!(&out, b"abcdefgh");
        }

        #[test]
        fn zstd_final_empty_block_after_a_full_cluster_is_fine() {
            let mut s = [0u8; 32];
            s[..4].copy_from_slice(&0xFD2F_B528u32.to_le_bytes());
            s[4] = 0x20;
            s[5] = 8;
            s[6..9].copy_from_slice(&(8u32 << 3).to_le_bytes()[..3]); // raw, not last
            s[9..17].copy_from_slice(b"abcdefgh");
            s[17..20].copy_from_slice(&1u32.to_le_bytes()[..3]); // empty raw block, last
            let mut out = [0u8; 8];
            decompress_cluster(Compression::Zstd, &s[..20], &mut out).unwrap();
            assert_eq!(&out, b"abcdefgh");
        }

        #[test]
        fn zstd_skippable_frames_are_skipped() {
            let (b, nb) = zstd_raw_frame(b"abcdefgh");
            let mut s = [0u8; 64];
            s[..4].copy_from_slice(&0x184D_2A50u32.to_le_bytes());
            s[4..8].copy_from_slice(&3u32.to_le_bytes());
            s[11..11 + nb].copy_from_slice(&b[..nb]);
            let mut out = [0u8; 8];
            decompress_cluster(Compression::Zstd, &s[..11 + nb], &mut out).unwrap();
            assert_eq!(&out, b"abcdefgh");
        }

        #[test]
        fn zstd_frame_past_the_cluster_is_too_much_output() {
            let (s, n) = zstd_raw_frame(b"abcdefghij");
            let mut out = [0u8; 8];
            assert_eq!(
                decompress_cluster(Compression::Zstd, &s[..n], &mut out),
                Err(CompressedError::TooMuchOutput { compression: Compression::Zstd, expected: 8 })
            );
        }

        #[test]
        fn zstd_input_ending_before_the_cluster_is_truncated() {
            let (s, n) = zstd_raw_frame(b"abcd");
            let mut out = [0u8; 8];
            assert_eq!(
                decompress_cluster(Compression::Zstd, &s[..n], &mut out),
                Err(CompressedError::Truncated { compression: Compression::Zstd, produced: 4, expected: 8 })
            );
            let (s, n) = zstd_raw_frame(b"abcdefgh");
            assert!(matches!(
                decompress_cluster(Compression::Zstd, &s[..n - 3], &mut out),
                Err(CompressedError::Truncated { compression: Compression::Zstd, .. })
            ));
        }

        #[test]
        fn zstd_bad_magic_is_corrupt() {
            let (mut s, n) = zstd_raw_frame(b"abcdefgh");
            s[0] ^= 0xff;
            let mut out = [0u8; 8];
            assert_eq!(
                decompress_cluster(Compression::Zstd, &s[..n], &mut out),
                Err(CompressedError::Corrupt { compression: Compression::Zstd })
            );
        }

        #[test]
        fn zstd_huge_window_is_refused_without_reserving_it() {
            let mut s = [0u8; 16];
            s[..4].copy_from_slice(&0xFD2F_B528u32.to_le_bytes());
            s[4] = 0x00; // not single segment: a window descriptor follows
            s[5] = 0xF8; // exponent 31: a 2 TiB window
            s[6..9].copy_from_slice(&((8u32 << 3) | 1).to_le_bytes()[..3]);
            let mut out = [0u8; 8];
            assert_eq!(
                decompress_cluster(Compression::Zstd, &s, &mut out),
                Err(CompressedError::Corrupt { compression: Compression::Zstd })
            );
        }
    }
}
