//! `qluks demo`: a self-check of every usable crypto backend against the others, then a short
//! throughput table (AES-256-XTS, 4 KiB sectors, 1 MiB batches, about 0.2 s per backend).
use std::time::Duration;

use qluks::hal::{Backend, Xts};

use crate::bench::{xts_gbps, Cipher, XtsConfig};

pub fn run() -> Result<(), Box<dyn std::error::Error>> {
    let key: Vec<u8> = (0..64u8).collect();
    let plain: Vec<u8> = (0..64 * 1024).map(|i| (i * 7 + 3) as u8).collect();
    let mut reference: Option<Vec<u8>> = None;
    for backend in Backend::available() {
        let xts = Xts::with_backend(&key, backend)?;
        let mut buf = plain.clone();
        xts.encrypt_units(&mut buf, 512, 1 << 32)?;
        let mut back = buf.clone();
        xts.decrypt_units(&mut back, 512, 1 << 32)?;
        if back != plain {
            return Err(format!("{backend}: decrypt(encrypt(x)) != x").into());
        }
        match &reference {
            None => reference = Some(buf),
            Some(r) if *r != buf => return Err(format!("{backend}: ciphertext differs from the first backend").into()),
            Some(_) => {}
        }
        println!("{backend:8} ok");
    }
    println!();
    println!("AES-256-XTS, 4 KiB sectors, 1 MiB batches (qluks bench xts for more):");
    for backend in Backend::available() {
        let config = |decrypt| XtsConfig {
            cipher: Cipher::Aes256,
            sector_size: 4096,
            batch: 1 << 20,
            decrypt,
            time: Duration::from_millis(100),
        };
        let (enc, dec) = (xts_gbps(backend, &config(false))?.gbps, xts_gbps(backend, &config(true))?.gbps);
        println!("{:8} encrypt {enc:6.2} GB/s   decrypt {dec:6.2} GB/s", backend.name());
    }
    Ok(())
}
