//! The PBKDF2-HMAC-SHA-256/224 chain kernels (`qluks_hal::sha`) on every backend this CPU
//! has, against a plain HMAC built on the `sha2` crate's `Digest` API.
use qluks_hal::sha::{pbkdf2_sha256_chains, Chain, Sha256Variant, ShaBackend};
use sha2::Digest;

/// HMAC-SHA-256/224 by the definition.
fn hmac(variant: Sha256Variant, key: &[u8; 64], msg: &[u8]) -> Vec<u8> {
    fn run<D: Digest>(key: &[u8; 64], msg: &[u8]) -> Vec<u8> {
        let ipad: Vec<u8> = key.iter().map(|b| b ^ 0x36).collect();
        let opad: Vec<u8> = key.iter().map(|b| b ^ 0x5c).collect();
        let inner = D::new().chain_update(&ipad).chain_update(msg).finalize();
        D::new().chain_update(&opad).chain_update(inner).finalize().to_vec()
    }
    match variant {
        Sha256Variant::Sha256 => run::<sha2::Sha256>(key, msg),
        Sha256Variant::Sha224 => run::<sha2::Sha224>(key, msg),
    }
}

/// The chaining state after one block `key ^ pad`.
fn keyed(variant: Sha256Variant, key: &[u8; 64], pad: u8) -> [u32; 8] {
    let mut s = match variant {
        Sha256Variant::Sha256 => {
            [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]
        }
        Sha256Variant::Sha224 => {
            [0xc1059ed8, 0x367cd507, 0x3070dd17, 0xf70e5939, 0xffc00b31, 0x68581511, 0x64f98fa7, 0xbefa4fa4]
        }
    };
    sha2::block_api::compress256(&mut s, &[key.map(|b| b ^ pad)]);
    s
}

fn to_words(d: &[u8]) -> [u32; 8] {
    let mut w = [0u32; 8];
    for (w, c) in w.iter_mut().zip(d.chunks(4)) {
        *w = u32::from_be_bytes(c.try_into().unwrap());
    }
    w
}

fn backends() -> Vec<ShaBackend> {
    // The CPU features the tests must find: SHA-NI where /proc/cpuinfo lists it; the ARMv8
    // SHA2 instructions where CI requires the armv8 AES backend (qemu-aarch64 -cpu max).
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let required_armv8 = std::env::var("QLUKS_REQUIRE_BACKENDS").unwrap_or_default().contains("armv8");
    if cfg!(target_arch = "x86_64") && cpuinfo.split_whitespace().any(|w| w == "sha_ni") {
        assert!(ShaBackend::ShaNi.is_available(), "/proc/cpuinfo lists sha_ni but shani is unavailable");
        assert_eq!(ShaBackend::ShaNi.sha1_kernel(), ShaBackend::ShaNi, "SHA-1 on shani runs another kernel");
    }
    if cfg!(target_arch = "aarch64") && required_armv8 {
        assert!(ShaBackend::Armv8.is_available(), "armv8 is required but its SHA2 kernel is unavailable");
        assert_eq!(ShaBackend::Armv8.sha1_kernel(), ShaBackend::Armv8, "SHA-1 on armv8 runs another kernel");
    }
    ShaBackend::ALL
        .into_iter()
        .filter(|b| {
            if !b.is_available() {
                eprintln!("SKIP: sha backend {b} is not available here");
            }
            b.is_available()
        })
        .collect()
}

#[test]
fn chains_match_hmac_by_definition_on_every_backend() {
    for variant in [Sha256Variant::Sha256, Sha256Variant::Sha224] {
        let out = if variant == Sha256Variant::Sha256 { 32 } else { 28 };
        let mut key = [0u8; 64];
        key[..11].copy_from_slice(b"qluks test!");
        let (inner, outer) = (keyed(variant, &key, 0x36), keyed(variant, &key, 0x5c));
        for lanes in 1..=5usize {
            // Start values: U_1 of chain l is the HMAC of a distinct message.
            let starts: Vec<Vec<u8>> = (0..lanes).map(|l| hmac(variant, &key, &[l as u8; 9])).collect();
            for iterations in [1u32, 2, 3, 17] {
                // Reference: `iterations` more rounds of U <- HMAC(U), T ^= U.
                let mut want = Vec::new();
                for s in &starts {
                    let (mut u, mut t) = (s.clone(), s.clone());
                    for _ in 0..iterations {
                        u = hmac(variant, &key, &u);
                        t.iter_mut().zip(&u).for_each(|(t, u)| *t ^= u);
                    }
                    want.push((u, t));
                }
                for backend in backends() {
                    let mut chains: Vec<Chain> = starts
                        .iter()
                        .map(|s| {
                            let mut w = s.clone();
                            w.resize(32, 0);
                            Chain { u: to_words(&w), t: to_words(&w) }
                        })
                        .collect();
                    pbkdf2_sha256_chains(backend, variant, &inner, &outer, &mut chains, iterations);
                    for (l, (c, (u, t))) in chains.iter().zip(&want).enumerate() {
                        let got_u: Vec<u8> = c.u.iter().flat_map(|w| w.to_be_bytes()).take(out).collect();
                        let got_t: Vec<u8> = c.t.iter().flat_map(|w| w.to_be_bytes()).take(out).collect();
                        assert_eq!(&got_u, u, "{backend} {variant:?} lanes={lanes} lane={l} c={iterations}: U");
                        assert_eq!(&got_t, t, "{backend} {variant:?} lanes={lanes} lane={l} c={iterations}: T");
                    }
                }
            }
        }
    }
}

#[test]
fn zero_iterations_leave_the_chains_alone() {
    for backend in backends() {
        let mut chains = [Chain { u: [1; 8], t: [2; 8] }; 3];
        pbkdf2_sha256_chains(backend, Sha256Variant::Sha256, &[3; 8], &[4; 8], &mut chains, 0);
        assert_eq!(chains, [Chain { u: [1; 8], t: [2; 8] }; 3]);
    }
}

#[cfg(all(target_arch = "x86_64", feature = "std"))]
#[test]
fn names_round_trip() {
    for b in ShaBackend::ALL {
        assert_eq!(ShaBackend::from_name(b.name()), Some(b));
    }
    assert_eq!(ShaBackend::best(), ShaBackend::available().last().unwrap());
}

/// HMAC-SHA-1 by the definition (`key` is the zero-padded key block).
fn hmac1(key: &[u8; 64], msg: &[u8]) -> Vec<u8> {
    let ipad: Vec<u8> = key.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = key.iter().map(|b| b ^ 0x5c).collect();
    let inner = sha1::Sha1::new().chain_update(&ipad).chain_update(msg).finalize();
    sha1::Sha1::new().chain_update(&opad).chain_update(inner).finalize().to_vec()
}

/// The SHA-1 chaining state after one block `key ^ pad`.
fn keyed1(key: &[u8; 64], pad: u8) -> [u32; 5] {
    let mut s = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    sha1::block_api::compress(&mut s, &[key.map(|b| b ^ pad)]);
    s
}

#[test]
fn sha1_chains_match_hmac_by_definition_on_every_backend() {
    let keyed = keyed1;
    let mut key = [0u8; 64];
    key[..5].copy_from_slice(b"sha-1");
    let (inner, outer) = (keyed(&key, 0x36), keyed(&key, 0x5c));
    for lanes in 1..=5usize {
        let starts: Vec<Vec<u8>> = (0..lanes).map(|l| hmac1(&key, &[l as u8; 3])).collect();
        for iterations in [1u32, 2, 3, 17] {
            for backend in backends() {
                let mut chains: Vec<Chain> = starts
                    .iter()
                    .map(|s| {
                        let mut w = s.clone();
                        w.resize(32, 0);
                        Chain { u: to_words(&w), t: to_words(&w) }
                    })
                    .collect();
                qluks_hal::sha::pbkdf2_sha1_chains(backend, &inner, &outer, &mut chains, iterations);
                for (l, (c, s)) in chains.iter().zip(&starts).enumerate() {
                    let (mut u, mut t) = (s.clone(), s.clone());
                    for _ in 0..iterations {
                        u = hmac1(&key, &u);
                        t.iter_mut().zip(&u).for_each(|(t, u)| *t ^= u);
                    }
                    let got_u: Vec<u8> = c.u.iter().flat_map(|w| w.to_be_bytes()).take(20).collect();
                    let got_t: Vec<u8> = c.t.iter().flat_map(|w| w.to_be_bytes()).take(20).collect();
                    assert_eq!(got_u, u, "{backend} lanes={lanes} lane={l} c={iterations}: U");
                    assert_eq!(got_t, t, "{backend} lanes={lanes} lane={l} c={iterations}: T");
                }
            }
        }
    }
}

/// PBKDF2-HMAC-SHA-1 of a password of at most 64 bytes on `backend`: U_1 of every output block
/// by the definition, the remaining `c - 1` iterations of all blocks in one chains call.
fn pbkdf2_sha1_on(backend: ShaBackend, password: &[u8], salt: &[u8], c: u32, len: usize) -> Vec<u8> {
    let mut key = [0u8; 64];
    key[..password.len()].copy_from_slice(password);
    let (inner, outer) = (keyed1(&key, 0x36), keyed1(&key, 0x5c));
    let mut chains: Vec<Chain> = (1..=len.div_ceil(20) as u32)
        .map(|i| {
            let mut w = hmac1(&key, &[salt, &i.to_be_bytes()[..]].concat());
            w.resize(32, 0);
            Chain { u: to_words(&w), t: to_words(&w) }
        })
        .collect();
    qluks_hal::sha::pbkdf2_sha1_chains(backend, &inner, &outer, &mut chains, c - 1);
    let mut out: Vec<u8> = chains.iter().flat_map(|c| c.t[..5].iter().flat_map(|w| w.to_be_bytes())).collect();
    out.truncate(len);
    out
}

/// The RFC 6070 PBKDF2-HMAC-SHA1 vectors (all but the 16777216-iteration one) on every
/// backend; the 25-byte one runs two chains together.
#[test]
fn rfc6070_vectors_on_every_backend() {
    let hex = |s: &str| -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    };
    let vectors: [(&[u8], &[u8], u32, &str); 5] = [
        (b"password", b"salt", 1, "0c60c80f961f0e71f3a9b524af6012062fe037a6"),
        (b"password", b"salt", 2, "ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957"),
        (b"password", b"salt", 4096, "4b007901b765489abead49d926f721d065a429c1"),
        (
            b"passwordPASSWORDpassword",
            b"saltSALTsaltSALTsaltSALTsaltSALTsalt",
            4096,
            "3d2eec4fe41c849b80c8d83662c0e44a8b291a964cf2f07038",
        ),
        (b"pass\0word", b"sa\0lt", 4096, "56fa6aa75548099dcc37d7f03425e0c3"),
    ];
    for backend in backends() {
        for (p, s, c, want) in vectors {
            let want = hex(want);
            assert_eq!(pbkdf2_sha1_on(backend, p, s, c, want.len()), want, "{backend} c={c} len={}", want.len());
        }
    }
}

/// Every SHA-1 backend against the portable loop: 1 to 9 chains (the four-, two- and one-chain
/// kernels and their mixes) from arbitrary start words, at several iteration counts.
#[test]
fn sha1_backends_match_the_portable_loop() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as u32
    };
    let inner: [u32; 5] = core::array::from_fn(|_| next());
    let outer: [u32; 5] = core::array::from_fn(|_| next());
    for lanes in [1usize, 2, 3, 4, 5, 6, 7, 8, 9] {
        let starts: Vec<Chain> = (0..lanes)
            .map(|_| Chain { u: core::array::from_fn(|_| next()), t: core::array::from_fn(|_| next()) })
            .collect();
        for iterations in [1u32, 2, 5, 64, 1000] {
            let mut want = starts.clone();
            qluks_hal::sha::pbkdf2_sha1_chains(ShaBackend::Portable, &inner, &outer, &mut want, iterations);
            for backend in backends() {
                let mut got = starts.clone();
                qluks_hal::sha::pbkdf2_sha1_chains(backend, &inner, &outer, &mut got, iterations);
                for (l, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(g.u[..5], w.u[..5], "{backend} lanes={lanes} lane={l} c={iterations}: U");
                    assert_eq!(g.t[..5], w.t[..5], "{backend} lanes={lanes} lane={l} c={iterations}: T");
                }
            }
        }
    }
}

/// SHA-1 runs its own kernel on SHA-NI and ARMv8 where they are available, portably elsewhere.
#[test]
fn sha1_kernel_follows_availability() {
    assert_eq!(ShaBackend::Portable.sha1_kernel(), ShaBackend::Portable);
    for b in [ShaBackend::ShaNi, ShaBackend::Armv8] {
        let want = if b.is_available() { b } else { ShaBackend::Portable };
        assert_eq!(b.sha1_kernel(), want, "{b}");
    }
    // `backends()` asserts that the kernels CI requires are found (and run for SHA-1).
    let found = backends();
    if cfg!(target_arch = "aarch64") && std::env::var("QLUKS_REQUIRE_BACKENDS").unwrap_or_default().contains("armv8") {
        assert!(found.contains(&ShaBackend::Armv8));
    }
}
