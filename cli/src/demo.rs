//! `qluks demo`: a self-check of every usable crypto backend against the others.
use qluks::hal::{Backend, Xts};

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
    Ok(())
}
