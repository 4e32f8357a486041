//! The LUKS anti-forensic splitter (AF): a key stretched over `stripes` copies so that erasing
//! any part of the key material destroys the key.
//!
//! Both directions stream: the key material passes through in pieces of any size (a sector at
//! a time) and only one key-sized accumulator is kept, whatever the stripe count.
//! `d = 0; for each stripe s_i but the last: d = diffuse(d ^ s_i); key = d ^ s_last`, where
//! diffuse replaces each digest-sized chunk `c_j` by `H(BE32(j) || c_j)` (last chunk truncated).

use super::{Error, HashAlg, VolumeKey};
use zeroize::Zeroize;

fn diffuse(hash: HashAlg, d: &mut [u8]) {
    let n = hash.digest_len();
    let mut out = [0u8; 64];
    for (j, chunk) in d.chunks_mut(n).enumerate() {
        hash.digest_into(&[&(j as u32).to_be_bytes(), chunk], &mut out);
        let len = chunk.len();
        chunk.copy_from_slice(&out[..len]);
    }
    out.zeroize();
}

/// Streaming AF-merge: feed the decrypted key material in order, then take the key.
pub struct AfMerge {
    hash: HashAlg,
    stripes: u32,
    stripe: u32,
    pos: usize,
    d: VolumeKey,
}

impl AfMerge {
    /// A merger for a `key_len`-byte key split over `stripes` stripes with `hash`.
    pub fn new(hash: HashAlg, key_len: usize, stripes: u32) -> Result<AfMerge, Error> {
        if stripes == 0 {
            return Err(Error::ZeroStripes);
        }
        Ok(AfMerge { hash, stripes, stripe: 0, pos: 0, d: VolumeKey::zeroed(key_len)? })
    }

    /// Bytes of key material still expected.
    pub fn remaining(&self) -> usize {
        let key_len = self.d.len();
        (self.stripes - self.stripe) as usize * key_len - self.pos
    }

    /// Consumes the next piece of key material; bytes past the last stripe are ignored.
    pub fn update(&mut self, mut material: &[u8]) {
        let key_len = self.d.len();
        while !material.is_empty() && self.stripe < self.stripes {
            let n = (key_len - self.pos).min(material.len());
            for (d, m) in self.d.as_mut_bytes()[self.pos..self.pos + n].iter_mut().zip(&material[..n]) {
                *d ^= m;
            }
            material = &material[n..];
            self.pos += n;
            if self.pos == key_len {
                self.pos = 0;
                self.stripe += 1;
                if self.stripe < self.stripes {
                    diffuse(self.hash, self.d.as_mut_bytes());
                }
            }
        }
    }

    /// The merged key, or `None` when fewer bytes than `key_len * stripes` were fed.
    pub fn finish(self) -> Option<VolumeKey> {
        (self.stripe == self.stripes).then_some(self.d)
    }
}

/// Streaming AF-split: produces the key material of `key` in order, stripes of random bytes
/// followed by the one that makes the merge give `key` back; zeros after the last stripe
/// (sector padding).
pub struct AfSplit<'k> {
    hash: HashAlg,
    key: &'k VolumeKey,
    stripes: u32,
    stripe: u32,
    pos: usize,
    d: VolumeKey,
}

impl<'k> AfSplit<'k> {
    /// A splitter of `key` over `stripes` stripes with `hash`.
    pub fn new(hash: HashAlg, key: &'k VolumeKey, stripes: u32) -> Result<AfSplit<'k>, Error> {
        if stripes == 0 {
            return Err(Error::ZeroStripes);
        }
        Ok(AfSplit { hash, key, stripes, stripe: 0, pos: 0, d: VolumeKey::zeroed(key.len())? })
    }

    /// Fills `out` with the next bytes of key material, drawing random stripes from `rng`.
    pub fn fill<R: rand_core::TryCryptoRng + ?Sized>(&mut self, mut out: &mut [u8], rng: &mut R) -> Result<(), Error> {
        let key_len = self.key.len();
        while !out.is_empty() {
            if self.stripe == self.stripes {
                out.fill(0);
                return Ok(());
            }
            let n = (key_len - self.pos).min(out.len());
            let (piece, rest) = out.split_at_mut(n);
            let d = &mut self.d.as_mut_bytes()[self.pos..self.pos + n];
            if self.stripe + 1 < self.stripes {
                rng.try_fill_bytes(piece).map_err(|_| Error::Random)?;
                d.iter_mut().zip(piece.iter()).for_each(|(d, s)| *d ^= s);
            } else {
                let k = &self.key.as_bytes()[self.pos..self.pos + n];
                piece.iter_mut().zip(d.iter().zip(k)).for_each(|(p, (d, k))| *p = d ^ k);
            }
            out = rest;
            self.pos += n;
            if self.pos == key_len {
                self.pos = 0;
                self.stripe += 1;
                if self.stripe < self.stripes {
                    // The stripe just finished was a random one: diffuse before the next.
                    diffuse(self.hash, self.d.as_mut_bytes());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A deterministic stand-in RNG (xorshift), marked crypto for the tests only (shared with
    /// the LUKS1 keyslot tests).
    pub(crate) struct TestRng(pub u64);
    impl rand_core::TryRng for TestRng {
        type Error = core::convert::Infallible;
        fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
            Ok(self.try_next_u64()? as u32)
        }
        fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            Ok(self.0)
        }
        fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
            for b in dst {
                *b = self.try_next_u64()? as u8;
            }
            Ok(())
        }
    }
    impl rand_core::TryCryptoRng for TestRng {}

    /// The textbook (whole-buffer) merge, to check the streaming one against.
    fn merge_reference(hash: HashAlg, material: &[u8], key_len: usize, stripes: usize) -> std::vec::Vec<u8> {
        let mut d = std::vec![0u8; key_len];
        for i in 0..stripes - 1 {
            d.iter_mut().zip(&material[i * key_len..]).for_each(|(d, s)| *d ^= s);
            diffuse(hash, &mut d);
        }
        d.iter_mut().zip(&material[(stripes - 1) * key_len..]).for_each(|(d, s)| *d ^= s);
        d
    }

    #[test]
    fn split_then_merge_gives_the_key_back_for_every_hash_and_key_size() {
        for hash in HashAlg::ALL {
            for key_len in [16, 32, 48, 64] {
                let key = VolumeKey::from_slice(&common_key(key_len)).unwrap();
                let stripes = 4000u32;
                let mut material = std::vec![0u8; key_len * stripes as usize + 100];
                let mut split = AfSplit::new(hash, &key, stripes).unwrap();
                // Odd piece sizes: stripes straddle the pieces.
                for piece in material.chunks_mut(333) {
                    split.fill(piece, &mut TestRng(7 + key_len as u64)).unwrap();
                }
                assert!(material[key_len * stripes as usize..].iter().all(|&b| b == 0), "padding is zero");
                assert_eq!(merge_reference(hash, &material, key_len, stripes as usize), key.as_bytes());
                let mut merge = AfMerge::new(hash, key_len, stripes).unwrap();
                for piece in material.chunks(512) {
                    merge.update(piece);
                }
                assert_eq!(merge.finish().unwrap().as_bytes(), key.as_bytes(), "{hash} {key_len}");
            }
        }
    }

    #[test]
    fn merge_of_short_material_gives_no_key() {
        let mut merge = AfMerge::new(HashAlg::Sha256, 32, 4).unwrap();
        merge.update(&[0u8; 32 * 4 - 1]);
        assert_eq!(merge.remaining(), 1);
        assert!(merge.finish().is_none());
    }

    #[test]
    fn one_stripe_is_the_key_itself() {
        let key = VolumeKey::from_slice(&[9u8; 32]).unwrap();
        let mut out = [0u8; 32];
        AfSplit::new(HashAlg::Sha1, &key, 1).unwrap().fill(&mut out, &mut TestRng(1)).unwrap();
        assert_eq!(out, [9u8; 32]);
    }

    #[test]
    fn zero_stripes_are_refused() {
        assert_eq!(AfMerge::new(HashAlg::Sha1, 32, 0).err(), Some(Error::ZeroStripes));
    }

    fn common_key(len: usize) -> std::vec::Vec<u8> {
        (0..len).map(|i| (i * 37 + 11) as u8).collect()
    }
}
