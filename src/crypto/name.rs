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
        fmt_untrusted(self.as_bytes(), f)
    }
}

/// Writes untrusted bytes for a terminal: printable UTF-8 as is; control characters (C0, DEL,
/// C1: newlines and ESC included) and the Unicode format characters that reorder or hide text
/// (bidirectional controls, zero-width characters, BOM) escaped; invalid UTF-8 as `\\xNN`.
pub(crate) fn fmt_untrusted(bytes: &[u8], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else if is_hidden_format(c) {
                write!(f, "{}", c.escape_unicode())?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        for b in chunk.invalid() {
            write!(f, "\\x{b:02x}")?;
        }
    }
    Ok(())
}

/// Format characters that change how surrounding text is shown (Trojan Source class).
fn is_hidden_format(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::Name;
    use std::string::ToString;

    #[test]
    fn terminal_controls_are_escaped() {
        // ESC sequences, newlines, C1 controls, bidi overrides and zero-width characters are
        // shown as escapes; printable text (any script) and invalid bytes are visible.
        let raw = "a\u{1b}[2Jb\nc\u{9b}d\u{202e}e\u{200b}f\u{feff}é".as_bytes();
        let mut bytes = raw.to_vec();
        bytes.push(0xff);
        assert_eq!(Name::new(&bytes).to_string(), "a\\u{1b}[2Jb\\nc\\u{9b}d\\u{202e}e\\u{200b}f\\u{feff}é\\xff");
        assert_eq!(crate::qcow2::UntrustedName(&bytes).to_string(), Name::new(&bytes).to_string());
    }
}
