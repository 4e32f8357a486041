//! The BlaMka permutation kernels against the portable one (which the core's Argon2 tests pin
//! to the RFC 9106 vectors and the `argon2` crate).
use qluks_hal::blamka::{fill_block, permute, BlamkaBackend, Block, BLOCK_BYTES, WORDS};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn block(&mut self) -> Block {
        core::array::from_fn(|_| self.next())
    }
}

#[test]
fn every_kernel_matches_the_portable_one() {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let mut blocks: Vec<Block> = (0..200).map(|_| rng.block()).collect();
    // Edge words: all zeros, all ones, single bits, high halves only (the multiply uses the
    // low 32 bits), low halves only.
    blocks.push([0; WORDS]);
    blocks.push([u64::MAX; WORDS]);
    blocks.push(core::array::from_fn(|i| 1u64 << (i % 64)));
    blocks.push(core::array::from_fn(|_| (rng.next() | 1) << 32));
    blocks.push(core::array::from_fn(|_| rng.next() & 0xffff_ffff));
    let kernels: Vec<BlamkaBackend> = BlamkaBackend::available().collect();
    for (n, input) in blocks.iter().enumerate() {
        let mut expected = *input;
        permute(BlamkaBackend::Portable, &mut expected);
        // Zero is P's fixed point; every other block moves.
        assert_eq!(&expected == input, input == &[0; WORDS], "block {n}");
        for &kernel in &kernels {
            let mut got = *input;
            permute(kernel, &mut got);
            assert_eq!(got, expected, "block {n} on the {kernel} kernel");
        }
    }
}

#[test]
fn chained_permutations_agree() {
    // Each output is the next input: a divergence in any word spreads and shows at the end.
    for kernel in BlamkaBackend::available() {
        let (mut a, mut b) = ([7u64; WORDS], [7u64; WORDS]);
        for _ in 0..1000 {
            permute(BlamkaBackend::Portable, &mut a);
            permute(kernel, &mut b);
        }
        assert_eq!(a, b, "{kernel}");
    }
}

#[test]
fn the_cpu_kernels_are_detected_where_the_cpu_has_them() {
    // So that the comparisons above cannot pass on the portable kernel alone.
    #[cfg(target_arch = "x86_64")]
    {
        assert_eq!(BlamkaBackend::Avx2.is_available(), std::is_x86_feature_detected!("avx2"));
        let vl = std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vl");
        assert_eq!(BlamkaBackend::Avx512Vl.is_available(), vl && BlamkaBackend::Avx2.is_available());
        assert!(!BlamkaBackend::Neon.is_available());
    }
    #[cfg(target_arch = "aarch64")]
    {
        assert!(BlamkaBackend::Neon.is_available());
        assert!(!BlamkaBackend::Avx2.is_available());
    }
    // A kernel that cannot run here falls back to the portable one.
    for kernel in BlamkaBackend::ALL {
        let (mut a, mut b) = ([3u64; WORDS], [3u64; WORDS]);
        permute(BlamkaBackend::Portable, &mut a);
        permute(kernel, &mut b);
        assert_eq!(a, b, "{kernel}");
    }
    // The default: the last x86 kernel available; NEON only by name until timed on hardware.
    let best = BlamkaBackend::available().filter(|&b| b != BlamkaBackend::Neon).last().unwrap();
    assert_eq!(BlamkaBackend::best(), best);
}

#[test]
fn every_block_step_matches_the_portable_one_with_and_without_xor() {
    let mut rng = Rng(0xfeed_f00d_1234_5678);
    // The memory blocks at odd offsets: the kernels take any alignment.
    let mut memory = vec![0u8; 2 * BLOCK_BYTES + 3];
    for case in 0..100 {
        let prev0 = rng.block();
        memory.iter_mut().for_each(|b| *b = rng.next() as u8);
        let xor = case % 2 == 1;
        let mut expected = None;
        for kernel in std::iter::once(BlamkaBackend::Portable).chain(BlamkaBackend::available()) {
            let mut mem = memory.clone();
            let (refb, dst) = mem[3..].split_at_mut(BLOCK_BYTES);
            let (refb, dst): (&[u8; BLOCK_BYTES], &mut [u8; BLOCK_BYTES]) =
                ((&*refb).try_into().unwrap(), dst.try_into().unwrap());
            let mut prev = prev0;
            let mut tmp = [0u64; WORDS];
            fill_block(kernel, &mut prev, refb, dst, xor, &mut tmp);
            // The new block is in `prev` and, as little-endian bytes, in `dst`.
            let written: Vec<u8> = prev.iter().flat_map(|w| w.to_le_bytes()).collect();
            assert_eq!(&written[..], &dst[..], "case {case}, {kernel}");
            assert_eq!(&mem[..3 + BLOCK_BYTES], &memory[..3 + BLOCK_BYTES], "case {case}, {kernel}: ref untouched");
            match &expected {
                None => {
                    // The definition, word by word: P(R) ^ R (^ the old block), R = prev ^ ref.
                    let word = |bytes: &[u8], k: usize| u64::from_le_bytes(bytes[8 * k..8 * k + 8].try_into().unwrap());
                    let mut r: Block = core::array::from_fn(|k| prev0[k] ^ word(&memory[3..], k));
                    let r0 = r;
                    permute(BlamkaBackend::Portable, &mut r);
                    let def: Block = core::array::from_fn(|k| {
                        r[k] ^ r0[k] ^ if xor { word(&memory[3 + BLOCK_BYTES..], k) } else { 0 }
                    });
                    assert_eq!(prev, def, "case {case}: portable step against the definition");
                    expected = Some(prev);
                }
                Some(e) => assert_eq!(&prev, e, "case {case}, {kernel}"),
            }
        }
    }
}
