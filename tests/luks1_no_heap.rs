//! Unlock, read and write perform no heap allocation: this test binary counts every
//! allocation through its global allocator (its own file, so no other test shares it).

mod common;

use common::counting_alloc::count_allocations;
use qluks::crypto::{CipherSpec, HashAlg, OsRng};
use qluks::io::MemIo;
use qluks::luks::luks1::{self, CreateParams, Iterations};
use qluks::luks::{LuksVolume, OpenOptions};

#[global_allocator]
static GLOBAL: common::counting_alloc::Counting = common::counting_alloc::Counting;

#[test]
fn unlock_read_and_write_allocate_nothing() {
    for (cipher, hash) in [("aes-256-xts-plain64", HashAlg::Sha256), ("aes-128-cbc-essiv:sha256", HashAlg::Sha1)] {
        let spec = CipherSpec::parse_sized(cipher).unwrap();
        let (_, payload_offset) = luks1::layout(spec.key_bytes as u32);
        let mut disk = vec![0u8; payload_offset as usize * 512 + 65536];
        let mut params = CreateParams { cipher: spec, hash, iterations: Iterations::fixed(1000) };
        luks1::format(&mut MemIo::new(&mut disk), 0, &mut params, b"pass", &mut OsRng).unwrap();
        let mut data = vec![0x5au8; 9000];
        let mut back = vec![0u8; 9000];

        let ((), allocations) = count_allocations(|| {
            let mut vol = LuksVolume::open(MemIo::new(&mut disk), b"pass", OpenOptions::default()).unwrap();
            vol.write_at(1234, &data).unwrap();
            vol.write_in_place(8192, &mut data).unwrap();
            vol.read_at(1234, &mut back).unwrap();
            vol.read_at(8192, &mut back).unwrap();
            vol.flush().unwrap();
        });
        assert_eq!(allocations, 0, "{cipher}: unlock + read + write allocated");
        // The counter does see allocations.
        let (probe, seen) = count_allocations(|| std::hint::black_box(Vec::<u8>::with_capacity(16)));
        assert_eq!(seen, 1);
        drop(probe);
        assert!(back.iter().all(|&b| b == 0x5a), "{cipher}: data did not round-trip");
    }
}
