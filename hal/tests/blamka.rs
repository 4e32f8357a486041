//! The BlaMka permutation kernels against the portable one (which the core's Argon2 tests pin
//! to the RFC 9106 vectors and the `argon2` crate).
use qluks_hal::blamka::{permute, BlamkaBackend, Block, WORDS};

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
    assert_eq!(BlamkaBackend::best(), BlamkaBackend::available().last().unwrap());
}
