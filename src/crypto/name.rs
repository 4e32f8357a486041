//! A short name copied out of untrusted input, for error messages that must not allocate.

use core::fmt;

/// Up to 48 bytes of a name (cipher, mode, hash) as found on disk, shown lossily.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Name {
    bytes: [u8; 48],
    len: u8,
}

impl Name {
    /// Copies `s` (truncated to 48 bytes).
    pub fn new(s: &[u8]) -> Name {
        let len = s.len().min(48);
        let mut bytes = [0u8; 48];
        bytes[..len].copy_from_slice(&s[..len]);
        Name { bytes, len: len as u8 }
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.as_bytes().utf8_chunks() {
            for c in chunk.valid().chars() {
                if c.is_control() {
                    write!(f, "{}", c.escape_default())?;
                } else {
                    write!(f, "{c}")?;
                }
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}
