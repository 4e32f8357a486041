//! The PBKDF2-HMAC-SHA-256/224 chain kernels (`qluks_hal::sha`) on every backend this CPU
//! has, against a plain HMAC built on the `sha2` crate's `Digest` API.
use qluks_hal::sha::{pbkdf2_sha256_chains, pbkdf2_sha512_chains, Chain, Sha256Variant, Sha512Variant, ShaBackend};
use sha2::Digest;

/// HMAC by the definition, `key` being the zero-padded key block of the hash `D`.
fn hmac_by_definition<D: Digest>(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let ipad: Vec<u8> = key.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = key.iter().map(|b| b ^ 0x5c).collect();
    let inner = D::new().chain_update(&ipad).chain_update(msg).finalize();
    D::new().chain_update(&opad).chain_update(inner).finalize().to_vec()
}

/// HMAC-SHA-256/224 by the definition.
fn hmac(variant: Sha256Variant, key: &[u8; 64], msg: &[u8]) -> Vec<u8> {
    match variant {
        Sha256Variant::Sha256 => hmac_by_definition::<sha2::Sha256>(key, msg),
        Sha256Variant::Sha224 => hmac_by_definition::<sha2::Sha224>(key, msg),
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
        // qemu-aarch64 -cpu max has FEAT_SHA512.
        assert_eq!(ShaBackend::Armv8.sha512_kernel(), ShaBackend::Armv8, "SHA-512 on armv8 runs another kernel");
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

/// SHA-1 runs its own kernel on SHA-NI and ARMv8 where they are available, portably elsewhere;
/// SHA-512 on ARMv8 with FEAT_SHA512.
#[test]
fn sha1_kernel_follows_availability() {
    assert_eq!(ShaBackend::Portable.sha1_kernel(), ShaBackend::Portable);
    for b in [ShaBackend::ShaNi, ShaBackend::Armv8] {
        let want = if b.is_available() { b } else { ShaBackend::Portable };
        assert_eq!(b.sha1_kernel(), want, "{b}");
    }
    // SHA-512 has a kernel on armv8 only (where the CPU has FEAT_SHA512 as well).
    assert_eq!(ShaBackend::Portable.sha512_kernel(), ShaBackend::Portable);
    assert_eq!(ShaBackend::ShaNi.sha512_kernel(), ShaBackend::Portable);
    if !ShaBackend::Armv8.is_available() {
        assert_eq!(ShaBackend::Armv8.sha512_kernel(), ShaBackend::Portable);
    }
    // `backends()` asserts that the kernels CI requires are found (and run for SHA-1, SHA-512).
    let found = backends();
    if cfg!(target_arch = "aarch64") && std::env::var("QLUKS_REQUIRE_BACKENDS").unwrap_or_default().contains("armv8") {
        assert!(found.contains(&ShaBackend::Armv8));
    }
}

/// HMAC-SHA-512/384 by the definition (`key` is the zero-padded 128-byte key block).
fn hmac512(variant: Sha512Variant, key: &[u8; 128], msg: &[u8]) -> Vec<u8> {
    match variant {
        Sha512Variant::Sha512 => hmac_by_definition::<sha2::Sha512>(key, msg),
        Sha512Variant::Sha384 => hmac_by_definition::<sha2::Sha384>(key, msg),
    }
}

/// The SHA-512/384 chaining state after one block `key ^ pad`.
fn keyed512(variant: Sha512Variant, key: &[u8; 128], pad: u8) -> [u64; 8] {
    let mut s = match variant {
        Sha512Variant::Sha512 => [
            0x6a09e667f3bcc908,
            0xbb67ae8584caa73b,
            0x3c6ef372fe94f82b,
            0xa54ff53a5f1d36f1,
            0x510e527fade682d1,
            0x9b05688c2b3e6c1f,
            0x1f83d9abfb41bd6b,
            0x5be0cd19137e2179,
        ],
        Sha512Variant::Sha384 => [
            0xcbbb9d5dc1059ed8,
            0x629a292a367cd507,
            0x9159015a3070dd17,
            0x152fecd8f70e5939,
            0x67332667ffc00b31,
            0x8eb44a8768581511,
            0xdb0c2e0d64f98fa7,
            0x47b5481dbefa4fa4,
        ],
    };
    sha2::block_api::compress512(&mut s, &[key.map(|b| b ^ pad)]);
    s
}

fn to_words64(d: &[u8]) -> [u64; 8] {
    let mut w = [0u64; 8];
    for (w, c) in w.iter_mut().zip(d.chunks(8)) {
        *w = u64::from_be_bytes(c.try_into().unwrap());
    }
    w
}

fn digest_len(variant: Sha512Variant) -> usize {
    if variant == Sha512Variant::Sha512 {
        64
    } else {
        48
    }
}

/// PBKDF2-HMAC-SHA-512/384 of a password of at most 128 bytes on `backend`, as
/// [`pbkdf2_sha1_on`].
fn pbkdf2_sha512_on(
    backend: ShaBackend,
    variant: Sha512Variant,
    password: &[u8],
    salt: &[u8],
    c: u32,
    len: usize,
) -> Vec<u8> {
    let out = digest_len(variant);
    let mut key = [0u8; 128];
    key[..password.len()].copy_from_slice(password);
    let (inner, outer) = (keyed512(variant, &key, 0x36), keyed512(variant, &key, 0x5c));
    let mut chains: Vec<Chain<u64>> = (1..=len.div_ceil(out) as u32)
        .map(|i| {
            let mut w = hmac512(variant, &key, &[salt, &i.to_be_bytes()[..]].concat());
            w.resize(64, 0);
            Chain { u: to_words64(&w), t: to_words64(&w) }
        })
        .collect();
    pbkdf2_sha512_chains(backend, variant, &inner, &outer, &mut chains, c - 1);
    let mut bytes: Vec<u8> =
        chains.iter().flat_map(|c| c.t.iter().flat_map(|w| w.to_be_bytes()).take(out).collect::<Vec<u8>>()).collect();
    bytes.truncate(len);
    bytes
}

/// The backends whose SHA-512 kernel differs (the portable one, and armv8 with FEAT_SHA512).
fn sha512_backends() -> Vec<ShaBackend> {
    let mut b: Vec<ShaBackend> = backends().into_iter().map(ShaBackend::sha512_kernel).collect();
    b.dedup();
    b
}

/// PBKDF2-HMAC-SHA-512/384 on every backend against known answers, computed once with
/// Python's `hashlib.pbkdf2_hmac` (Python 3, OpenSSL 3) and recorded here; the 200-byte ones
/// run four output blocks (SHA-384: five) through the kernels together.
#[test]
fn sha512_known_answers_on_every_backend() {
    let hex = |s: &str| -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    };
    let long = (&b"passwordPASSWORDpassword"[..], &b"saltSALTsaltSALTsaltSALTsaltSALTsalt"[..]);
    /// Hash, password, salt, iterations, derived key in hex.
    type Vector<'a> = (Sha512Variant, &'a [u8], &'a [u8], u32, &'a str);
    let vectors: [Vector; 8] = [
        (
            Sha512Variant::Sha512,
            b"password",
            b"salt",
            1,
            "867f70cf1ade02cff3752599a3a53dc4af34c7a669815ae5d513554e1c8cf252\
             c02d470a285a0501bad999bfe943c08f050235d7d68b1da55e63f73b60a57fce",
        ),
        (
            Sha512Variant::Sha512,
            b"password",
            b"salt",
            2,
            "e1d9c16aa681708a45f5c7c4e215ceb66e011a2e9f0040713f18aefdb866d53c\
             f76cab2868a39b9f7840edce4fef5a82be67335c77a6068e04112754f27ccf4e",
        ),
        (
            Sha512Variant::Sha512,
            b"password",
            b"salt",
            4096,
            "d197b1b33db0143e018b12f3d1d1479e6cdebdcc97c5c0f87f6902e072f457b5\
             143f30602641b3d55cd335988cb36b84376060ecd532e039b742a239434af2d5",
        ),
        (
            Sha512Variant::Sha512,
            long.0,
            long.1,
            4096,
            "8c0511f4c6e597c6ac6315d8f0362e225f3c501495ba23b868c005174dc4ee71115b59f9e60cd9532fa33e0f75aefe30\
             225c583a186cd82bd4daea9724a3d3b804f75bdd41494fa324cab24bcc680fb3b96a30cf5d21fac3c2875913919f33\
             99b1d9ce7eb54c95ba49118596cf7465719bbe02c4ecab1b1541298c321d13c6f6d414c28163b051a1d313cec13a76\
             ebdbba624eb2c742a984fcc2c6984f4afbbe4502a9bf78f6b556ba0060b6ce9499116ac91721febedf986f70be1834\
             4418e28a694dcd786f52f1",
        ),
        (
            Sha512Variant::Sha384,
            b"password",
            b"salt",
            1,
            "c0e14f06e49e32d73f9f52ddf1d0c5c7191609233631dadd76a567db42b78676\
             b38fc800cc53ddb642f5c74442e62be44d727702213e3bb9223c53b767fbfb5d",
        ),
        (
            Sha512Variant::Sha384,
            b"password",
            b"salt",
            2,
            "54f775c6d790f21930459162fc535dbf04a939185127016a04176a0730c6f1f4\
             fb48832ad1261baadd2cedd50814b1c806ad1bbf43ebdc9d047904bf7ceafe1e",
        ),
        (
            Sha512Variant::Sha384,
            b"password",
            b"salt",
            4096,
            "559726be38db125bc85ed7895f6e3cf574c7a01c080c3447db1e8a76764deb3c\
             307b94853fbe424f6488c5f4f12896261d1eb430353c769ee2a77a26fd0a2347",
        ),
        (
            Sha512Variant::Sha384,
            long.0,
            long.1,
            4096,
            "819143ad66df9a552559b9e131c52ae6c5c1b0eed18f4d283b8c5c9eaeb92b392c147cc2d2869d58ffe2f7da13d15f8d\
             925721f0ed1afafa24480d55cf6060b17f112a3de74cae25fdf3569e247f29e4dbb84421847822ea99bd20283c3a25a6\
             0d3db95a2c06d39cf5d34cb2a1781199f62f8710498211725062e6b02f3ff2b66c0a03d86bd31bf0fd8d61eff7243450\
             695f984d1a4acf1b090195d7b14170ad2b9ee510fa2ddc9c640fd955cd8ac55326ac362de28d9312e45111dc93556\
             50c2d384c9584a9f23f",
        ),
    ];
    for backend in sha512_backends() {
        for (variant, p, s, c, want) in vectors {
            let want = hex(want);
            let got = pbkdf2_sha512_on(backend, variant, p, s, c, want.len());
            assert_eq!(got, want, "{backend} {variant:?} c={c} len={}", want.len());
        }
    }
}

/// The SHA-512/384 chains against HMAC by the definition on every backend, 1 to 5 chains.
#[test]
fn sha512_chains_match_hmac_by_definition_on_every_backend() {
    for variant in [Sha512Variant::Sha512, Sha512Variant::Sha384] {
        let out = digest_len(variant);
        let mut key = [0u8; 128];
        key[..7].copy_from_slice(b"sha-512");
        let (inner, outer) = (keyed512(variant, &key, 0x36), keyed512(variant, &key, 0x5c));
        for lanes in 1..=5usize {
            let starts: Vec<Vec<u8>> = (0..lanes).map(|l| hmac512(variant, &key, &[l as u8; 5])).collect();
            for iterations in [1u32, 2, 3, 17] {
                for backend in sha512_backends() {
                    let mut chains: Vec<Chain<u64>> = starts
                        .iter()
                        .map(|s| {
                            let mut w = s.clone();
                            w.resize(64, 0);
                            Chain { u: to_words64(&w), t: to_words64(&w) }
                        })
                        .collect();
                    pbkdf2_sha512_chains(backend, variant, &inner, &outer, &mut chains, iterations);
                    for (l, (c, s)) in chains.iter().zip(&starts).enumerate() {
                        let (mut u, mut t) = (s.clone(), s.clone());
                        for _ in 0..iterations {
                            u = hmac512(variant, &key, &u);
                            t.iter_mut().zip(&u).for_each(|(t, u)| *t ^= u);
                        }
                        let got_u: Vec<u8> = c.u.iter().flat_map(|w| w.to_be_bytes()).take(out).collect();
                        let got_t: Vec<u8> = c.t.iter().flat_map(|w| w.to_be_bytes()).take(out).collect();
                        assert_eq!(got_u, u, "{backend} {variant:?} lanes={lanes} lane={l} c={iterations}: U");
                        assert_eq!(got_t, t, "{backend} {variant:?} lanes={lanes} lane={l} c={iterations}: T");
                    }
                }
            }
        }
    }
}

/// Every SHA-512/384 kernel against the portable loop from arbitrary start words (1 to 5
/// chains: the two-chain kernel, the one-chain kernel and their mixes), at several counts.
#[test]
fn sha512_backends_match_the_portable_loop() {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for variant in [Sha512Variant::Sha512, Sha512Variant::Sha384] {
        let words = digest_len(variant) / 8;
        let inner: [u64; 8] = core::array::from_fn(|_| next());
        let outer: [u64; 8] = core::array::from_fn(|_| next());
        for lanes in 1..=5usize {
            let starts: Vec<Chain<u64>> = (0..lanes)
                .map(|_| Chain { u: core::array::from_fn(|_| next()), t: core::array::from_fn(|_| next()) })
                .collect();
            for iterations in [1u32, 2, 5, 64, 500] {
                let mut want = starts.clone();
                pbkdf2_sha512_chains(ShaBackend::Portable, variant, &inner, &outer, &mut want, iterations);
                for backend in sha512_backends() {
                    let mut got = starts.clone();
                    pbkdf2_sha512_chains(backend, variant, &inner, &outer, &mut got, iterations);
                    for (l, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert_eq!(
                            g.u[..words],
                            w.u[..words],
                            "{backend} {variant:?} lanes={lanes} lane={l} c={iterations}: U"
                        );
                        assert_eq!(
                            g.t[..words],
                            w.t[..words],
                            "{backend} {variant:?} lanes={lanes} lane={l} c={iterations}: T"
                        );
                    }
                }
            }
        }
    }
}
