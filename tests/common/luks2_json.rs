//! Rewriting the JSON metadata of a LUKS2 header in place (both copies, checksums fixed), to
//! make headers claim what a test needs. Included with `#[path]` by the tests that use it.

use qluks::luks::luks2::binary_header::{Checksum, ChecksumAlg, CSUM_LEN, OFF_CSUM};

/// Rewrites the JSON text of both header copies (each `hdr_size` bytes) with `edit` and fixes
/// their checksums.
pub fn patch(disk: &mut [u8], hdr_size: usize, edit: impl Fn(&str) -> String) {
    for copy in [0usize, hdr_size] {
        let area = &mut disk[copy + 4096..copy + hdr_size];
        let len = area.iter().position(|&b| b == 0).unwrap();
        let text = edit(std::str::from_utf8(&area[..len]).unwrap());
        area.fill(0);
        area[..text.len()].copy_from_slice(text.as_bytes());
        disk[copy + OFF_CSUM..copy + OFF_CSUM + CSUM_LEN].fill(0);
        let mut sum = Checksum::new(ChecksumAlg::Sha256);
        sum.update(&disk[copy..copy + hdr_size]);
        disk[copy + OFF_CSUM..copy + OFF_CSUM + CSUM_LEN].copy_from_slice(&sum.finish());
    }
}

/// `text` with its one occurrence of `from` replaced by `to`.
pub fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "{from} in {text}");
    text.replacen(from, to, 1)
}
