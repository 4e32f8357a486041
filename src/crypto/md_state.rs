//! Merkle–Damgård hash states driven block by block, for the PBKDF2 inner loop.
//!
//! PBKDF2-HMAC spends its time hashing one fixed-shape block twice per iteration. Driving the
//! compression functions directly (with the HMAC pads absorbed once, and the padding of each
//! block written once) removes the buffering of the generic `Digest` path; the compression
//! functions themselves are RustCrypto's (SHA-NI / ARMv8 SHA when the CPU has them).

/// A big-endian Merkle–Damgård hash whose compression function we can call.
pub(crate) trait MdHash {
    /// Block size in bytes (64 or 128).
    const BLOCK: usize;
    /// Digest size in bytes (after truncation for SHA-224/384).
    const OUT: usize;
    /// Bytes of the length field in the padding (8 or 16).
    const LEN_BYTES: usize;
    /// Chaining state.
    type State: Copy + zeroize::Zeroize;
    /// One block.
    type Block: Copy + AsRef<[u8]> + AsMut<[u8]> + zeroize::Zeroize;
    /// The initial state.
    const IV: Self::State;
    /// An all-zero block.
    const ZERO: Self::Block;
    /// Compresses one block into the state.
    fn compress(state: &mut Self::State, block: &Self::Block);
    /// `state` after compressing `block`, leaving `state` as it was.
    #[inline(always)]
    fn compress_copy(mut state: Self::State, block: &Self::Block) -> Self::State {
        Self::compress(&mut state, block);
        state
    }
    /// Writes the first `out.len()` (<= OUT) digest bytes of `state`.
    fn write_digest(state: &Self::State, out: &mut [u8]);
}

macro_rules! md32 {
    ($name:ident, $words:literal, $out:literal, $iv:expr, $compress:path) => {
        pub(crate) struct $name;
        impl MdHash for $name {
            const BLOCK: usize = 64;
            const OUT: usize = $out;
            const LEN_BYTES: usize = 8;
            type State = [u32; $words];
            type Block = [u8; 64];
            const IV: Self::State = $iv;
            const ZERO: Self::Block = [0; 64];
            #[inline(always)]
            fn compress(state: &mut Self::State, block: &Self::Block) {
                $compress(state, core::slice::from_ref(block));
            }
            #[inline(always)]
            fn write_digest(state: &Self::State, out: &mut [u8]) {
                for (chunk, w) in out.chunks_mut(4).zip(state.iter()) {
                    chunk.copy_from_slice(&w.to_be_bytes()[..chunk.len()]);
                }
            }
        }
    };
}

macro_rules! md64 {
    ($name:ident, $out:literal, $iv:expr) => {
        pub(crate) struct $name;
        impl MdHash for $name {
            const BLOCK: usize = 128;
            const OUT: usize = $out;
            const LEN_BYTES: usize = 16;
            type State = [u64; 8];
            type Block = [u8; 128];
            const IV: Self::State = $iv;
            const ZERO: Self::Block = [0; 128];
            #[inline(always)]
            fn compress(state: &mut Self::State, block: &Self::Block) {
                sha2::block_api::compress512(state, core::slice::from_ref(block));
            }
            #[inline(always)]
            fn write_digest(state: &Self::State, out: &mut [u8]) {
                for (chunk, w) in out.chunks_mut(8).zip(state.iter()) {
                    chunk.copy_from_slice(&w.to_be_bytes()[..chunk.len()]);
                }
            }
        }
    };
}

md32!(Sha1, 5, 20, [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0], sha1::block_api::compress);
md32!(
    Sha224,
    8,
    28,
    [0xc1059ed8, 0x367cd507, 0x3070dd17, 0xf70e5939, 0xffc00b31, 0x68581511, 0x64f98fa7, 0xbefa4fa4],
    sha2::block_api::compress256
);
md32!(
    Sha256,
    8,
    32,
    [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19],
    sha2::block_api::compress256
);
md64!(
    Sha384,
    48,
    [
        0xcbbb9d5dc1059ed8,
        0x629a292a367cd507,
        0x9159015a3070dd17,
        0x152fecd8f70e5939,
        0x67332667ffc00b31,
        0x8eb44a8768581511,
        0xdb0c2e0d64f98fa7,
        0x47b5481dbefa4fa4
    ]
);
md64!(
    Sha512,
    64,
    [
        0x6a09e667f3bcc908,
        0xbb67ae8584caa73b,
        0x3c6ef372fe94f82b,
        0xa54ff53a5f1d36f1,
        0x510e527fade682d1,
        0x9b05688c2b3e6c1f,
        0x1f83d9abfb41bd6b,
        0x5be0cd19137e2179
    ]
);

/// Hashes `parts` onward from `state`, which has already absorbed `absorbed` bytes (whole
/// blocks), including the final padding; returns the final state.
pub(crate) fn finish<H: MdHash>(mut state: H::State, absorbed: u64, parts: &[&[u8]]) -> H::State {
    let mut block = H::ZERO;
    let mut fill = 0usize;
    let mut total = absorbed;
    for part in parts {
        for &b in *part {
            block.as_mut()[fill] = b;
            fill += 1;
            if fill == H::BLOCK {
                H::compress(&mut state, &block);
                fill = 0;
            }
        }
        total += part.len() as u64;
    }
    block.as_mut()[fill] = 0x80;
    fill += 1;
    if fill > H::BLOCK - H::LEN_BYTES {
        block.as_mut()[fill..].fill(0);
        H::compress(&mut state, &block);
        fill = 0;
    }
    block.as_mut()[fill..].fill(0);
    let bits = ((total as u128) * 8).to_be_bytes();
    block.as_mut()[H::BLOCK - H::LEN_BYTES..].copy_from_slice(&bits[16 - H::LEN_BYTES..]);
    H::compress(&mut state, &block);
    zeroize::Zeroize::zeroize(&mut block);
    state
}

/// A block holding a digest-sized message after one absorbed block (the HMAC pad):
/// `msg || 0x80 || 0.. || bitlen(BLOCK + OUT)`, with the message area left for the caller.
pub(crate) fn digest_block<H: MdHash>() -> H::Block {
    let mut block = H::ZERO;
    block.as_mut()[H::OUT] = 0x80;
    let bits = (((H::BLOCK + H::OUT) as u128) * 8).to_be_bytes();
    block.as_mut()[H::BLOCK - H::LEN_BYTES..].copy_from_slice(&bits[16 - H::LEN_BYTES..]);
    block
}
