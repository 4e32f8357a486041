//! Backend availability and choice, and typed errors for bad keys, lengths and backends.
mod common;

use qluks_hal::{Aes, Backend, Cbc, Error, Essiv, EssivHash, IvGen, Xts};

/// CI sets QLUKS_REQUIRE_BACKENDS to the backends this CPU has (.ci/run reads /proc/cpuinfo):
/// each must be available here, and is then exercised by every test that runs on
/// `common::tested_backends()`.
#[test]
fn every_required_backend_is_available_and_tested() {
    let required = common::required_backends();
    println!("required backends: {required:?}");
    let tested = common::tested_backends();
    for b in required {
        assert!(b.is_available(), "required backend {b} is not available");
        assert!(tested.contains(&b), "required backend {b} is not tested");
    }
}

#[test]
fn soft_is_always_available_and_best_is_the_last_available() {
    let available: Vec<Backend> = Backend::available().collect();
    println!("available backends: {available:?}, best: {}", Backend::best());
    assert_eq!(available.first(), Some(&Backend::Soft));
    assert_eq!(Backend::best(), *available.last().unwrap());
    for b in Backend::ALL {
        assert_eq!(b.is_available(), available.contains(&b), "{b}");
        assert_eq!(Backend::from_name(b.name()), Some(b));
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn aesni_is_available_exactly_when_the_cpu_has_aes_and_pclmulqdq() {
    let cpu = std::is_x86_feature_detected!("aes") && std::is_x86_feature_detected!("pclmulqdq");
    assert_eq!(Backend::Aesni.is_available(), cpu);
    assert!(!Backend::Armv8.is_available());
}

#[cfg(target_arch = "aarch64")]
#[test]
fn armv8_is_available_exactly_when_the_cpu_has_aes() {
    assert_eq!(Backend::Armv8.is_available(), std::arch::is_aarch64_feature_detected!("aes"));
    for b in [Backend::Aesni, Backend::Vaes256, Backend::Vaes512] {
        assert!(!b.is_available(), "{b}");
    }
}

#[test]
fn an_unavailable_backend_is_refused() {
    let unavailable: Vec<Backend> = Backend::ALL.into_iter().filter(|b| !b.is_available()).collect();
    // On any one machine at least one of aesni / armv8 is absent.
    assert!(!unavailable.is_empty());
    for b in unavailable {
        assert_eq!(Aes::with_backend(&[0; 16], b).unwrap_err(), Error::BackendUnavailable(b));
        assert_eq!(Xts::with_backend(&[0; 32], b).unwrap_err(), Error::BackendUnavailable(b));
        assert_eq!(Cbc::with_backend(&[0; 16], b).unwrap_err(), Error::BackendUnavailable(b));
        assert_eq!(Essiv::new(EssivHash::Sha256, &[0; 16], b).unwrap_err(), Error::BackendUnavailable(b));
    }
}

#[test]
fn key_lengths_other_than_aes_ones_are_refused() {
    for len in [0, 1, 15, 17, 20, 31, 33, 64] {
        assert_eq!(Aes::new(&vec![0; len]).unwrap_err(), Error::InvalidKeyLength { len });
        assert_eq!(Cbc::new(&vec![0; len]).unwrap_err(), Error::InvalidKeyLength { len });
    }
    for len in [0, 16, 24, 31, 33, 40, 63, 65, 128] {
        assert_eq!(Xts::new(&vec![0; len]).unwrap_err(), Error::InvalidKeyLength { len });
    }
}

#[test]
fn essiv_hashes_whose_digest_is_not_an_aes_key_are_refused() {
    for (hash, len) in [(EssivHash::Sha1, 20), (EssivHash::Sha384, 48), (EssivHash::Sha512, 64)] {
        assert_eq!(Essiv::new(hash, b"key", Backend::Soft).unwrap_err(), Error::InvalidKeyLength { len });
    }
}

#[test]
fn xts_unit_size_must_be_a_power_of_two_from_512_to_4096() {
    for b in common::tested_backends() {
        let xts = Xts::with_backend(&[7; 64], b).unwrap();
        let mut buf = vec![0u8; 8192];
        for size in [0, 16, 256, 768, 1000, 8192] {
            assert_eq!(xts.encrypt_units(&mut buf, size, 0).unwrap_err(), Error::InvalidUnitSize { size });
            assert_eq!(xts.decrypt_units(&mut buf, size, 0).unwrap_err(), Error::InvalidUnitSize { size });
        }
    }
}

#[test]
fn xts_batch_must_be_whole_units() {
    let xts = Xts::new(&[7; 32]).unwrap();
    let mut buf = vec![0u8; 1536];
    assert_eq!(xts.encrypt_units(&mut buf, 1024, 0).unwrap_err(), Error::LengthNotMultiple { len: 1536, unit: 1024 });
    assert_eq!(
        xts.decrypt_units(&mut buf[..100], 512, 0).unwrap_err(),
        Error::LengthNotMultiple { len: 100, unit: 512 }
    );
    // An empty batch is zero units: nothing to do.
    assert_eq!(xts.encrypt_units(&mut [], 512, 0), Ok(()));
}

#[test]
fn xts_single_unit_needs_one_full_block() {
    for b in common::tested_backends() {
        let xts = Xts::with_backend(&[1; 48], b).unwrap();
        for len in [0, 1, 15] {
            let mut buf = vec![0u8; len];
            assert_eq!(xts.encrypt_unit(&mut buf, &[0; 16]).unwrap_err(), Error::TooShort { len });
            assert_eq!(xts.decrypt_unit(&mut buf, &[0; 16]).unwrap_err(), Error::TooShort { len });
        }
    }
}

#[test]
fn ecb_and_cbc_need_whole_blocks() {
    let aes = Aes::new(&[3; 16]).unwrap();
    let cbc = Cbc::new(&[3; 16]).unwrap();
    let mut buf = [0u8; 40];
    let err = Error::LengthNotMultiple { len: 40, unit: 16 };
    assert_eq!(aes.encrypt_blocks(&mut buf).unwrap_err(), err);
    assert_eq!(aes.decrypt_blocks(&mut buf).unwrap_err(), err);
    assert_eq!(cbc.encrypt(&mut buf, &[0; 16]).unwrap_err(), err);
    assert_eq!(cbc.decrypt(&mut buf, &[0; 16]).unwrap_err(), err);
}

#[test]
fn cbc_sector_size_must_be_a_nonzero_multiple_of_16_dividing_the_buffer() {
    let cbc = Cbc::new(&[3; 32]).unwrap();
    let mut buf = vec![0u8; 1024];
    for size in [0, 8, 17, 500] {
        assert_eq!(
            cbc.encrypt_sectors(&mut buf, size, 0, IvGen::Plain64).unwrap_err(),
            Error::InvalidUnitSize { size }
        );
        assert_eq!(cbc.decrypt_sectors(&mut buf, size, 0, IvGen::Plain).unwrap_err(), Error::InvalidUnitSize { size });
    }
    assert_eq!(
        cbc.encrypt_sectors(&mut buf[..1000], 512, 0, IvGen::Plain64).unwrap_err(),
        Error::LengthNotMultiple { len: 1000, unit: 512 }
    );
}

#[test]
fn debug_output_never_shows_key_bytes() {
    let key = [0xA5u8; 64];
    let xts = Xts::new(&key).unwrap();
    let text = format!("{xts:?} {:?} {:?}", Aes::new(&key[..32]).unwrap(), Cbc::new(&key[..16]).unwrap());
    for needle in ["a5", "A5", "165"] {
        assert!(!text.contains(needle), "{text}");
    }
}

#[test]
fn huge_sector_sizes_with_an_empty_buffer_are_zero_sectors_not_an_overflow() {
    for b in common::tested_backends() {
        let cbc = Cbc::with_backend(&[3; 16], b).unwrap();
        for size in [1usize << 60, usize::MAX & !15] {
            assert_eq!(cbc.encrypt_sectors(&mut [], size, 0, IvGen::Plain64), Ok(()));
            assert_eq!(cbc.decrypt_sectors(&mut [], size, u64::MAX, IvGen::Plain), Ok(()));
        }
    }
}
