//! Passphrases from the console (`SimpleTextInput`), without echo.

use uefi::proto::console::text::{Key, ScanCode};
use uefi::{boot, println, system};

/// Reads one line into `buf` without echoing it: printable characters (UTF-8 encoded) are
/// kept, Backspace removes the last character, Enter ends the line, Escape cancels. Returns the
/// length, or `None` when cancelled or when the line would not fit in `buf`.
pub fn read_secret(prompt: &str, buf: &mut [u8]) -> Option<usize> {
    println!("{prompt}");
    let mut len = 0;
    let result = system::with_stdin(|stdin| loop {
        let event = match stdin.wait_for_key_event() {
            Ok(event) => event,
            Err(_) => return None,
        };
        if boot::wait_for_event(&[event]).is_err() {
            return None;
        }
        match stdin.read_key() {
            Ok(Some(Key::Printable(c))) => match u16::from(c) {
                0x0d | 0x0a => return Some(len),
                // Backspace; a serial terminal may send DEL for it.
                0x08 | 0x7f => len = back(buf, len),
                0x00..=0x1f => {}
                _ => {
                    let ch = char::from(c);
                    let n = ch.len_utf8();
                    if len + n > buf.len() {
                        return None;
                    }
                    ch.encode_utf8(&mut buf[len..len + n]);
                    len += n;
                }
            },
            // Some terminals' Backspace arrives as Delete.
            Ok(Some(Key::Special(ScanCode::DELETE))) => len = back(buf, len),
            Ok(Some(Key::Special(ScanCode::ESCAPE))) => return None,
            Ok(_) => {}
            Err(_) => return None,
        }
    });
    println!();
    result
}

/// The length after removing the last UTF-8 character of `buf[..len]`.
fn back(buf: &[u8], mut len: usize) -> usize {
    while len > 0 {
        len -= 1;
        if buf[len] & 0xc0 != 0x80 {
            break;
        }
    }
    len
}
