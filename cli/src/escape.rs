//! One escaping display for every string an image supplies (backing and data file names,
//! feature names, snapshot ids and tags, LUKS labels, UUIDs, cipher and hash names) before the
//! CLI shows it to a person: the core's [`qluks::qcow2::UntrustedName`], so an image cannot move the
//! cursor, clear the screen, fake a line of output or reorder text on the user's terminal.
//! JSON output keeps the exact strings (its encoder escapes control characters).

/// `bytes` as text safe to print on a terminal (see [`qluks::qcow2::UntrustedName`]).
pub fn shown(bytes: impl AsRef<[u8]>) -> String {
    qluks::qcow2::UntrustedName(bytes.as_ref()).to_string()
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn control_and_bidi_characters_are_escaped() {
        assert_eq!(
            shown("base\u{1b}]0;pwned\u{7}\nkeyslot 0: active"),
            "base\\u{1b}]0;pwned\\u{7}\\nkeyslot 0: active"
        );
        assert_eq!(shown("tag\u{202e}gpj.exe"), "tag\\u{202e}gpj.exe");
        assert_eq!(shown(b"\xffname"), "\\xffname");
        assert_eq!(shown("plain-name_1.qcow2"), "plain-name_1.qcow2");
    }
}
