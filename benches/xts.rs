//! XTS batch throughput: every backend usable here x AES-128/256 x 512/4096-byte sectors x
//! encrypt/decrypt, with `xts-mode` + `aes` as the baseline in the same group.
//!
//! `cargo bench --bench xts` (add `-- 'aes-256/4096'` to pick groups). Each call processes a
//! 1 MiB buffer in place, as `qluks bench xts` does, so the two report comparable figures.
use std::hint::black_box;
use std::time::Duration;

use aes::cipher::{Array, BlockCipherDecrypt, BlockCipherEncrypt, BlockSizeUser, KeyInit};
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use qluks::hal::{Backend, Xts};
use xts_mode::Xts128;

const BATCH: usize = 1 << 20;

fn baseline<C>(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    key: &[u8],
    sector: usize,
    encrypt: bool,
) where
    C: BlockCipherEncrypt + BlockCipherDecrypt + BlockSizeUser<BlockSize = aes::cipher::consts::U16> + KeyInit,
{
    let (k1, k2) = key.split_at(key.len() / 2);
    let xts = Xts128::new(C::new_from_slice(k1).unwrap(), C::new_from_slice(k2).unwrap());
    let mut buf = vec![0x5au8; BATCH];
    group.bench_function("xts-mode", |b| {
        b.iter(|| {
            for (i, unit) in black_box(&mut buf[..]).chunks_exact_mut(sector).enumerate() {
                let tweak = Array((1000 + i as u128).to_le_bytes());
                if encrypt {
                    xts.encrypt_sector(unit, tweak);
                } else {
                    xts.decrypt_sector(unit, tweak);
                }
            }
        })
    });
}

fn xts(c: &mut Criterion) {
    for (cipher, key_len) in [("aes-128", 32), ("aes-256", 64)] {
        let key: Vec<u8> = (0..key_len as u8).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect();
        for sector in [512usize, 4096] {
            for encrypt in [true, false] {
                let direction = if encrypt { "encrypt" } else { "decrypt" };
                let mut group = c.benchmark_group(format!("xts/{cipher}/{sector}/{direction}"));
                group.throughput(Throughput::Bytes(BATCH as u64));
                group.sample_size(10).warm_up_time(Duration::from_millis(200)).measurement_time(Duration::from_secs(1));
                for backend in Backend::available() {
                    let xts = Xts::with_backend(&key, backend).unwrap();
                    let mut buf = vec![0x5au8; BATCH];
                    group.bench_function(backend.name(), |b| {
                        b.iter(|| {
                            let buf = black_box(&mut buf[..]);
                            if encrypt {
                                xts.encrypt_units(buf, sector, 1000).unwrap();
                            } else {
                                xts.decrypt_units(buf, sector, 1000).unwrap();
                            }
                        })
                    });
                }
                if key_len == 32 {
                    baseline::<aes::Aes128>(&mut group, &key, sector, encrypt);
                } else {
                    baseline::<aes::Aes256>(&mut group, &key, sector, encrypt);
                }
                group.finish();
            }
        }
    }
}

criterion_group!(benches, xts);
criterion_main!(benches);
