//! Fixed-capacity values copied out of the metadata: short names ([`Name`]), binary values
//! decoded from base64 ([`Bytes`]) and a printable view of untrusted bytes ([`Text`]).
//!
//! ```
//! use qluks::luks::luks2::text::{Bytes, Name, Text};
//!
//! let hash = Name::<16>::new("sha256").expect("fits");
//! assert_eq!(hash.as_str(), "sha256");
//! assert!(Name::<4>::new("sha256").is_none()); // too long is refused, not cut
//! assert_eq!(Name::<4>::truncated("sha256").as_str(), "sha2");
//!
//! let salt = Bytes::<64>::from_base64(b"AAEC/w==").expect("padded base64");
//! assert_eq!(salt.as_slice(), &[0, 1, 2, 0xff]);
//!
//! // Untrusted bytes (a label) display up to their NUL, unprintable ones escaped.
//! assert_eq!(format!("{}", Text(b"disk\x1b[2J\0junk")), "disk\\x1b[2J");
//! ```

use core::fmt;

/// A short UTF-8 name ("sha256", "aes-xts-plain64") stored inline, at most `N` bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Name<const N: usize> {
    bytes: [u8; N],
    len: u8,
}

impl<const N: usize> Name<N> {
    /// Copies `s`; `None` when it is longer than `N` (at most 255).
    pub fn new(s: &str) -> Option<Self> {
        let mut bytes = [0u8; N];
        bytes.get_mut(..s.len())?.copy_from_slice(s.as_bytes());
        Some(Name { bytes, len: u8::try_from(s.len()).ok()? })
    }

    /// Copies `s`, cut at `N` bytes (on a character boundary).
    pub fn truncated(s: &str) -> Self {
        let mut len = s.len().min(N).min(usize::from(u8::MAX));
        while !s.is_char_boundary(len) {
            len -= 1;
        }
        let mut bytes = [0u8; N];
        bytes[..len].copy_from_slice(&s.as_bytes()[..len]);
        Name { bytes, len: len as u8 }
    }

    /// Decodes a JSON string; `None` when it is longer than `N` bytes.
    pub fn from_json(s: super::json::JsonStr<'_>) -> Option<Self> {
        let mut bytes = [0u8; N];
        let len = s.decode_into(&mut bytes)?.len();
        Some(Name { bytes, len: u8::try_from(len).ok()? })
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        // Only ever filled from `&str` or decoded JSON strings, both valid UTF-8.
        core::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

impl<const N: usize> fmt::Debug for Name<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl<const N: usize> fmt::Display for Name<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Binary data (a salt, a digest) stored inline, at most `N` bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Bytes<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Bytes<N> {
    /// Decodes standard padded base64 (as cryptsetup writes it); `None` when malformed or
    /// longer than `N` bytes decoded.
    pub fn from_base64(text: &[u8]) -> Option<Self> {
        use base64ct::Encoding as _;
        let mut bytes = [0u8; N];
        let len = base64ct::Base64::decode(text, &mut bytes).ok()?.len();
        Some(Bytes { bytes, len })
    }

    /// Copies `data`; `None` when it is longer than `N`.
    pub fn new(data: &[u8]) -> Option<Self> {
        let mut bytes = [0u8; N];
        bytes.get_mut(..data.len())?.copy_from_slice(data);
        Some(Bytes { bytes, len: data.len() })
    }

    /// The data.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl<const N: usize> fmt::Debug for Bytes<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.as_slice() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Displays untrusted bytes up to the first NUL, with anything unprintable escaped.
#[derive(Clone, Copy)]
pub struct Text<'a>(pub &'a [u8]);

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.0.iter().take_while(|&&b| b != 0) {
            if b.is_ascii_graphic() || b == b' ' {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn names_longer_than_capacity_are_refused() {
        assert_eq!(Name::<6>::new("sha256").unwrap().as_str(), "sha256");
        assert!(Name::<5>::new("sha256").is_none());
    }

    #[test]
    fn base64_decodes_padded_standard_alphabet() {
        let b = Bytes::<8>::from_base64(b"AAEC/w==").unwrap();
        assert_eq!(b.as_slice(), &[0, 1, 2, 0xff]);
        assert!(Bytes::<8>::from_base64(b"AAEC/w").is_none(), "padding is required");
        assert!(Bytes::<8>::from_base64(b"AA*C").is_none());
        assert!(Bytes::<2>::from_base64(b"AAEC/w==").is_none(), "too long for the capacity");
    }

    #[test]
    fn text_escapes_unprintable_bytes_and_stops_at_nul() {
        assert_eq!(Text(b"ab\x01c\0zz").to_string(), "ab\\x01c");
    }
}
