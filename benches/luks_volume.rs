//! LUKS volume sequential decrypt: `LuksVolume::read_at` of 1 MiB at a time over an in-memory
//! device (`MemIo`, 8 MiB, read in turn), aes-256-xts-plain64 with 512- and 4096-byte sectors,
//! next to its peers in the same group:
//! - `hal-xts-*`: the hal's batch call on a warm 1 MiB buffer (what the volume can reach),
//! - `copy-only`: the device read alone (the memcpy every volume read pays),
//! - `volume-4096-per-sector`: the 4096-byte path as it was before the tweak step (the read,
//!   then one cipher call per sector, IV sectors stepping by 8).
//!
//! `cargo bench --bench luks_volume`.
use std::hint::black_box;
use std::num::{NonZeroU128, NonZeroU64};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qluks::crypto::{CipherSpec, SectorCipher};
use qluks::hal::Xts;
use qluks::io::{BlockIo, MemIo};
use qluks::luks::{DataSegment, LuksVolume};

const READ: usize = 1 << 20;
const DEVICE: usize = 8 << 20;

fn key() -> Vec<u8> {
    (0..64u8).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect()
}

fn volume(device: &[u8], sector_size: usize) -> LuksVolume<MemIo<'_>> {
    let cipher = SectorCipher::new(CipherSpec::DEFAULT, &key()).unwrap();
    let segment = DataSegment { offset: 0, size: None, sector_size, iv_tweak: 0, cipher };
    LuksVolume::new(MemIo::read_only(device), segment).unwrap()
}

fn luks_volume(c: &mut Criterion) {
    let device: Vec<u8> = (0..DEVICE).map(|i| (i * 131 + 7) as u8).collect();
    let mut group = c.benchmark_group("luks-volume/aes-256-xts/read-1MiB");
    group.throughput(Throughput::Bytes(READ as u64));
    group.sample_size(20).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    let mut buf = vec![0u8; READ];
    let mut at = 0u64;
    let mut next = move || {
        let offset = at;
        at = (at + READ as u64) % DEVICE as u64;
        offset
    };

    let xts = Xts::new(&key()).unwrap();
    group.bench_function("hal-xts-512", |b| b.iter(|| xts.decrypt_units(black_box(&mut buf), 512, 1 << 20).unwrap()));
    let eight = NonZeroU128::new(8).unwrap();
    group.bench_function("hal-xts-4096-step8", |b| {
        b.iter(|| xts.decrypt_units_step(black_box(&mut buf), 4096, 1 << 20, eight).unwrap())
    });

    let mut io = MemIo::read_only(&device);
    group.bench_function("copy-only", |b| b.iter(|| io.read_at(next(), black_box(&mut buf)).unwrap()));

    for sector_size in [512, 4096] {
        let mut vol = volume(&device, sector_size);
        group.bench_function(format!("volume-{sector_size}"), |b| {
            b.iter(|| vol.read_at(next(), black_box(&mut buf)).unwrap())
        });
    }

    // Before the tweak step: the same read, then one cipher call per 4096-byte sector.
    let cipher = SectorCipher::new(CipherSpec::DEFAULT, &key()).unwrap();
    let mut io = MemIo::read_only(&device);
    group.bench_function("volume-4096-per-sector", |b| {
        b.iter(|| {
            let offset = next();
            io.read_at(offset, black_box(&mut buf)).unwrap();
            let mut iv = offset / 512;
            for sector in buf.chunks_exact_mut(4096) {
                cipher.decrypt_sectors(sector, 4096, iv).unwrap();
                iv += 8;
            }
        })
    });
    // The same with today's stepped call, for a like-for-like pair.
    group.bench_function("volume-4096-stepped-call", |b| {
        b.iter(|| {
            let offset = next();
            io.read_at(offset, black_box(&mut buf)).unwrap();
            cipher.decrypt_sectors_step(&mut buf, 4096, offset / 512, NonZeroU64::new(8).unwrap()).unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, luks_volume);
criterion_main!(benches);
