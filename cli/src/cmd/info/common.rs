//! What the pieces of `qluks info` share: qemu's names for LUKS data and backing file names.
use qluks::luks::luks1::Luks1Header;

use crate::json::{LuksSlot, LuksSpecific};

/// qemu's `QCryptoBlockInfoLUKS` of a LUKS1 header.
pub fn luks1_specific(h: &Luks1Header) -> LuksSpecific {
    let (mode, ivgen, ivgen_hash) = cipher_parts(h.cipher.mode_name());
    LuksSpecific {
        cipher_alg: format!("{}-{}", h.cipher.cipher_name(), h.cipher.aes_bits()),
        cipher_mode: mode,
        ivgen_alg: ivgen,
        ivgen_hash_alg: ivgen_hash,
        hash_alg: h.hash.name().into(),
        detached_header: false,
        payload_offset: h.payload_offset_bytes(),
        master_key_iters: h.mk_iterations.into(),
        uuid: h.uuid_str().into(),
        slots: h
            .keyslots
            .iter()
            .map(|k| LuksSlot {
                active: k.active,
                iters: k.active.then_some(k.iterations.into()),
                stripes: k.active.then_some(k.stripes.into()),
                key_offset: u64::from(k.key_offset) * 512,
            })
            .collect(),
        qluks_luks_version: Some(1),
    }
}

/// A LUKS mode (`xts-plain64`, `cbc-essiv:sha256`, `ecb`) as qemu splits it: mode, IV
/// generator, IV generator hash.
pub fn cipher_parts(mode: &str) -> (String, String, Option<String>) {
    let (m, iv) = mode.split_once('-').unwrap_or((mode, "plain"));
    let (iv, hash) = match iv.split_once(':') {
        Some((iv, h)) => (iv, Some(h.to_string())),
        None => (iv, None),
    };
    (m.into(), iv.into(), hash)
}

/// qemu's `bdrv_get_full_backing_filename`: `backing` relative to the directory of `image`.
pub fn full_backing_filename(image: &str, backing: &str) -> String {
    if backing.starts_with('/') {
        return backing.into();
    }
    match image.rfind('/') {
        Some(i) => format!("{}{backing}", &image[..=i]),
        None => backing.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::open::sectors_len;

    #[test]
    fn backing_names_resolve_like_qemu() {
        assert_eq!(full_backing_filename("ov.qcow2", "base.qcow2"), "base.qcow2");
        assert_eq!(full_backing_filename("/tmp/d/ov.qcow2", "base.qcow2"), "/tmp/d/base.qcow2");
        assert_eq!(full_backing_filename("d/ov.qcow2", "/abs/base"), "/abs/base");
        assert_eq!(sectors_len(1000), 1024);
        assert_eq!(sectors_len(1024), 1024);
    }

    #[test]
    fn luks_modes_split_like_qemu() {
        assert_eq!(cipher_parts("xts-plain64"), ("xts".into(), "plain64".into(), None));
        assert_eq!(cipher_parts("cbc-essiv:sha256"), ("cbc".into(), "essiv".into(), Some("sha256".into())));
    }
}
