//! A heap-free pull parser for the LUKS2 JSON metadata.
//!
//! The metadata is read straight from the caller's bytes: strings are handed out as validated
//! slices of the input ([`JsonStr`]), numbers as their text ([`Number`]), objects and arrays
//! through callbacks that consume one member or element at a time. Nothing is copied or
//! allocated, nesting is bounded by [`MAX_DEPTH`] (so a hostile `[[[[...` cannot exhaust the
//! stack), and every malformed input ends in a [`JsonError`] with its byte offset, never a
//! panic. The parser knows nothing about LUKS; `metadata.rs` gives the members their meaning.
//!
//! ```
//! use qluks::luks::luks2::json::{JsonError, JsonErrorKind, Parser};
//!
//! # fn main() -> Result<(), JsonError> {
//! let text = br#"{"keyslots": {"0": {"type": "luks2", "key_size": 64}}, "tokens": [1, "x"], "v": 2}"#;
//! let (mut key_size, mut tokens) = (None, 0);
//! Parser::document(text, |p, member| {
//!     if member.eq_str("keyslots") {
//!         p.object(|p, _id| {
//!             p.object(|p, field| match field.raw() {
//!                 "key_size" => Ok(key_size = p.number()?.as_u64()),
//!                 _ => p.skip(), // every value is consumed: parsed or skipped
//!             })
//!         })
//!     } else if member.eq_str("tokens") {
//!         p.array(|p| p.skip().map(|()| tokens += 1))
//!     } else {
//!         p.skip()
//!     }
//! })?;
//! assert_eq!((key_size, tokens), (Some(64), 2));
//!
//! // Hostile input ends in a typed error with its offset: here nesting past `MAX_DEPTH`.
//! let deep = [&br#"{"a":"#[..], &[b'['; 100]].concat();
//! let err = Parser::document(&deep, |p, _| p.skip()).unwrap_err();
//! assert_eq!(err.kind, JsonErrorKind::TooDeep);
//! # Ok(())
//! # }
//! ```

use core::fmt;

/// Deepest nesting of objects and arrays accepted. LUKS2 metadata needs 4; tokens (free-form
/// JSON owned by other programs) get some room on top.
pub const MAX_DEPTH: u8 = 32;

/// What went wrong in the JSON text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonErrorKind {
    /// The text ended inside a value.
    UnexpectedEnd,
    /// A byte that cannot start or continue the value at this position.
    UnexpectedByte(u8),
    /// Objects and arrays nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// A backslash escape that JSON does not define, or a broken `\u` surrogate pair.
    BadEscape,
    /// A string that is not valid UTF-8.
    BadUtf8,
    /// A raw control character (below 0x20) inside a string.
    ControlCharacter,
    /// A number that does not follow the JSON grammar.
    BadNumber,
    /// Something other than whitespace after the top-level value.
    TrailingData,
    /// A value of another type where this one was expected.
    Expected(ValueKind),
}

/// A JSON syntax error and where it was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonError {
    /// What went wrong.
    pub kind: JsonErrorKind,
    /// Byte offset in the JSON text.
    pub offset: usize,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JSON metadata at byte {}: ", self.offset)?;
        match self.kind {
            JsonErrorKind::UnexpectedEnd => f.write_str("text ends inside a value"),
            JsonErrorKind::UnexpectedByte(b) if b.is_ascii_graphic() => write!(f, "unexpected '{}'", b as char),
            JsonErrorKind::UnexpectedByte(b) => write!(f, "unexpected byte {b:#04x}"),
            JsonErrorKind::TooDeep => write!(f, "nesting deeper than {MAX_DEPTH} levels"),
            JsonErrorKind::BadEscape => f.write_str("invalid escape sequence in a string"),
            JsonErrorKind::BadUtf8 => f.write_str("string is not valid UTF-8"),
            JsonErrorKind::ControlCharacter => f.write_str("raw control character in a string"),
            JsonErrorKind::BadNumber => f.write_str("malformed number"),
            JsonErrorKind::TrailingData => f.write_str("data after the end of the metadata object"),
            JsonErrorKind::Expected(kind) => write!(f, "expected {kind}"),
        }
    }
}

impl core::error::Error for JsonError {}

/// The type of a JSON value, known from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// `{...}`
    Object,
    /// `[...]`
    Array,
    /// `"..."`
    String,
    /// `-1.5e3`
    Number,
    /// `true` / `false`
    Bool,
    /// `null`
    Null,
}

impl fmt::Display for ValueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ValueKind::Object => "an object",
            ValueKind::Array => "an array",
            ValueKind::String => "a string",
            ValueKind::Number => "a number",
            ValueKind::Bool => "true or false",
            ValueKind::Null => "null",
        })
    }
}

/// A JSON string as written between its quotes, already validated (escapes, UTF-8, no control
/// characters), so decoding it cannot fail.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct JsonStr<'a> {
    raw: &'a str,
}

impl<'a> JsonStr<'a> {
    /// The decoded characters.
    pub fn chars(&self) -> JsonChars<'a> {
        JsonChars { rest: self.raw.chars() }
    }

    /// Whether the decoded string equals `s`.
    pub fn eq_str(&self, s: &str) -> bool {
        if !self.raw.contains('\\') {
            return self.raw == s;
        }
        self.chars().eq(s.chars())
    }

    /// Decodes into `out`; `None` when it does not fit.
    pub fn decode_into<'b>(&self, out: &'b mut [u8]) -> Option<&'b [u8]> {
        let mut len = 0;
        for c in self.chars() {
            let mut utf8 = [0u8; 4];
            let bytes = c.encode_utf8(&mut utf8).as_bytes();
            out.get_mut(len..len + bytes.len())?.copy_from_slice(bytes);
            len += bytes.len();
        }
        Some(&out[..len])
    }

    /// The text as written, escapes included.
    pub fn raw(&self) -> &'a str {
        self.raw
    }
}

impl fmt::Debug for JsonStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.raw)
    }
}

/// Iterator over the decoded characters of a [`JsonStr`].
#[derive(Clone)]
pub struct JsonChars<'a> {
    rest: core::str::Chars<'a>,
}

impl JsonChars<'_> {
    fn hex4(&mut self) -> u32 {
        let mut v = 0;
        for _ in 0..4 {
            v = v << 4 | self.rest.next().and_then(|c| c.to_digit(16)).unwrap_or(0);
        }
        v
    }
}

impl Iterator for JsonChars<'_> {
    type Item = char;
    fn next(&mut self) -> Option<char> {
        let c = self.rest.next()?;
        if c != '\\' {
            return Some(c);
        }
        // The string was validated when it was scanned, so every escape here is well formed;
        // the fallbacks only keep this free of panics.
        Some(match self.rest.next()? {
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'u' => {
                let hi = self.hex4();
                let code = if (0xD800..0xDC00).contains(&hi) {
                    self.rest.next();
                    self.rest.next();
                    let lo = self.hex4();
                    0x10000 + ((hi - 0xD800) << 10) + (lo.wrapping_sub(0xDC00) & 0x3FF)
                } else {
                    hi
                };
                char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER)
            }
            other => other,
        })
    }
}

/// The text of a JSON number, validated against the JSON grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Number<'a> {
    text: &'a str,
}

impl Number<'_> {
    /// The value when it is a non-negative integer that fits in a `u64` (no sign, fraction or
    /// exponent).
    pub fn as_u64(&self) -> Option<u64> {
        parse_decimal_u64(self.text.as_bytes())
    }

    /// The number as written.
    pub fn text(&self) -> &str {
        self.text
    }
}

/// Parses plain decimal digits (as LUKS2 writes offsets and sizes, in strings) into a `u64`;
/// `None` for an empty text, any other byte, or overflow.
pub fn parse_decimal_u64(text: &[u8]) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    text.iter().try_fold(0u64, |acc, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        acc.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// The pull parser: a cursor over the JSON text. Cloning it gives an independent cursor at
/// the same position (to look ahead inside an object).
#[derive(Debug, Clone)]
pub struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
    depth: u8,
}

impl<'a> Parser<'a> {
    /// A parser at the start of `input`.
    pub fn new(input: &'a [u8]) -> Self {
        Parser { input, pos: 0, depth: 0 }
    }

    /// Parses `input` as one top-level object, calling `member` with each key; `member` must
    /// consume the value (parse it or [`Parser::skip`] it). Only whitespace may follow.
    pub fn document<E: From<JsonError>>(
        input: &'a [u8],
        member: impl FnMut(&mut Parser<'a>, JsonStr<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut parser = Parser::new(input);
        parser.object(member)?;
        parser.skip_whitespace();
        if parser.pos != input.len() {
            return Err(parser.error(JsonErrorKind::TrailingData).into());
        }
        Ok(())
    }

    /// Current byte offset.
    pub fn offset(&self) -> usize {
        self.pos
    }

    fn error(&self, kind: JsonErrorKind) -> JsonError {
        JsonError { kind, offset: self.pos }
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.input.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek_byte(&mut self) -> Result<u8, JsonError> {
        self.skip_whitespace();
        self.input.get(self.pos).copied().ok_or(self.error(JsonErrorKind::UnexpectedEnd))
    }

    fn expect_byte(&mut self, expected: u8) -> Result<(), JsonError> {
        let b = self.peek_byte()?;
        if b != expected {
            return Err(self.error(JsonErrorKind::UnexpectedByte(b)));
        }
        self.pos += 1;
        Ok(())
    }

    /// The type of the next value, without consuming it.
    pub fn peek(&mut self) -> Result<ValueKind, JsonError> {
        Ok(match self.peek_byte()? {
            b'{' => ValueKind::Object,
            b'[' => ValueKind::Array,
            b'"' => ValueKind::String,
            b'-' | b'0'..=b'9' => ValueKind::Number,
            b't' | b'f' => ValueKind::Bool,
            b'n' => ValueKind::Null,
            b => return Err(self.error(JsonErrorKind::UnexpectedByte(b))),
        })
    }

    fn expect_kind(&mut self, kind: ValueKind) -> Result<(), JsonError> {
        if self.peek()? != kind {
            return Err(self.error(JsonErrorKind::Expected(kind)));
        }
        Ok(())
    }

    /// The error for the byte under the cursor (called only where one is known to exist).
    fn unexpected_here(&self) -> JsonError {
        match self.input.get(self.pos) {
            Some(&b) => self.error(JsonErrorKind::UnexpectedByte(b)),
            None => self.error(JsonErrorKind::UnexpectedEnd),
        }
    }

    fn enter(&mut self) -> Result<(), JsonError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error(JsonErrorKind::TooDeep));
        }
        self.depth += 1;
        Ok(())
    }

    /// Parses an object, calling `member` with each key (see [`Parser::document`]).
    pub fn object<E: From<JsonError>>(
        &mut self,
        mut member: impl FnMut(&mut Parser<'a>, JsonStr<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.expect_kind(ValueKind::Object)?;
        self.enter()?;
        self.pos += 1;
        if self.peek_byte()? == b'}' {
            self.pos += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            if self.peek_byte()? != b'"' {
                return Err(self.unexpected_here().into());
            }
            let key = self.string()?;
            self.expect_byte(b':')?;
            let before = self.pos;
            member(self, key)?;
            if self.pos == before {
                // A callback that consumed nothing would make the separator check below
                // misread the value; treat it as skipping.
                self.skip()?;
            }
            match self.peek_byte()? {
                b',' => self.pos += 1,
                b'}' => {
                    self.pos += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                b => return Err(self.error(JsonErrorKind::UnexpectedByte(b)).into()),
            }
        }
    }

    /// Parses an array, calling `element` for each element, which it must consume.
    pub fn array<E: From<JsonError>>(
        &mut self,
        mut element: impl FnMut(&mut Parser<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.expect_kind(ValueKind::Array)?;
        self.enter()?;
        self.pos += 1;
        if self.peek_byte()? == b']' {
            self.pos += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            let before = self.pos;
            element(self)?;
            if self.pos == before {
                self.skip()?;
            }
            match self.peek_byte()? {
                b',' => self.pos += 1,
                b']' => {
                    self.pos += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                b => return Err(self.error(JsonErrorKind::UnexpectedByte(b)).into()),
            }
        }
    }

    /// Parses a string.
    pub fn string(&mut self) -> Result<JsonStr<'a>, JsonError> {
        self.expect_kind(ValueKind::String)?;
        self.pos += 1;
        let start = self.pos;
        loop {
            let b = *self.input.get(self.pos).ok_or(self.error(JsonErrorKind::UnexpectedEnd))?;
            match b {
                b'"' => break,
                b'\\' => {
                    self.pos += 1;
                    self.escape()?;
                }
                0..0x20 => return Err(self.error(JsonErrorKind::ControlCharacter)),
                _ => self.pos += 1,
            }
        }
        let raw = core::str::from_utf8(&self.input[start..self.pos])
            .map_err(|e| JsonError { kind: JsonErrorKind::BadUtf8, offset: start + e.valid_up_to() })?;
        self.pos += 1;
        Ok(JsonStr { raw })
    }

    /// Validates one escape; `pos` is just after the backslash.
    fn escape(&mut self) -> Result<(), JsonError> {
        let b = *self.input.get(self.pos).ok_or(self.error(JsonErrorKind::UnexpectedEnd))?;
        match b {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {
                self.pos += 1;
                Ok(())
            }
            b'u' => {
                self.pos += 1;
                let unit = self.hex4()?;
                match unit {
                    0xD800..0xDC00 => {
                        // A high surrogate must be followed by an escaped low surrogate.
                        if self.input.get(self.pos..self.pos + 2) != Some(b"\\u") {
                            return Err(self.error(JsonErrorKind::BadEscape));
                        }
                        self.pos += 2;
                        if !(0xDC00..0xE000).contains(&self.hex4()?) {
                            return Err(self.error(JsonErrorKind::BadEscape));
                        }
                        Ok(())
                    }
                    0xDC00..0xE000 => Err(self.error(JsonErrorKind::BadEscape)),
                    _ => Ok(()),
                }
            }
            _ => Err(self.error(JsonErrorKind::BadEscape)),
        }
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let digits = self.input.get(self.pos..self.pos + 4).ok_or(self.error(JsonErrorKind::UnexpectedEnd))?;
        let mut v = 0;
        for &d in digits {
            let d = char::from(d).to_digit(16).ok_or(self.error(JsonErrorKind::BadEscape))?;
            v = v << 4 | d;
        }
        self.pos += 4;
        Ok(v)
    }

    /// Parses a number.
    pub fn number(&mut self) -> Result<Number<'a>, JsonError> {
        self.expect_kind(ValueKind::Number)?;
        let start = self.pos;
        let bad = |p: &Self| p.error(JsonErrorKind::BadNumber);
        if self.input.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        match self.input.get(self.pos) {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(bad(self)),
        }
        if self.input.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if !matches!(self.input.get(self.pos), Some(b'0'..=b'9')) {
                return Err(bad(self));
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.input.get(self.pos) {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.input.get(self.pos) {
                self.pos += 1;
            }
            if !matches!(self.input.get(self.pos), Some(b'0'..=b'9')) {
                return Err(bad(self));
            }
            self.digits();
        }
        // Only ASCII digits and signs were accepted above.
        let text = core::str::from_utf8(&self.input[start..self.pos]).map_err(|_| bad(self))?;
        Ok(Number { text })
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.input.get(self.pos) {
            self.pos += 1;
        }
    }

    /// Parses `true` or `false`.
    pub fn bool(&mut self) -> Result<bool, JsonError> {
        self.expect_kind(ValueKind::Bool)?;
        if self.literal(b"true")? {
            return Ok(true);
        }
        if self.literal(b"false")? {
            return Ok(false);
        }
        Err(self.unexpected_here())
    }

    fn literal(&mut self, word: &[u8]) -> Result<bool, JsonError> {
        let end = self.pos + word.len();
        match self.input.get(self.pos..end) {
            Some(w) if w == word => {
                self.pos = end;
                Ok(true)
            }
            Some(_) => Ok(false),
            None if self.input.get(self.pos..).is_some_and(|rest| word.starts_with(rest)) => {
                Err(JsonError { kind: JsonErrorKind::UnexpectedEnd, offset: self.input.len() })
            }
            None => Ok(false),
        }
    }

    /// Skips one value of any type, validating it.
    pub fn skip(&mut self) -> Result<(), JsonError> {
        match self.peek()? {
            ValueKind::Object => self.object(|p, _| p.skip()),
            ValueKind::Array => self.array(|p| p.skip()),
            ValueKind::String => self.string().map(drop),
            ValueKind::Number => self.number().map(drop),
            ValueKind::Bool => self.bool().map(drop),
            ValueKind::Null => {
                if self.literal(b"null")? {
                    Ok(())
                } else {
                    Err(self.unexpected_here())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skip_all(text: &str) -> Result<(), JsonError> {
        Parser::document(text.as_bytes(), |p, _| p.skip())
    }

    fn kind(text: &str) -> JsonErrorKind {
        skip_all(text).unwrap_err().kind
    }

    #[test]
    fn well_formed_documents_parse() {
        skip_all(r#"{}"#).unwrap();
        skip_all(r#" { "a" : [1, -2.5e+3, 0.0, true, false, null, "x\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"], "b": {"c": {}} } "#)
            .unwrap();
    }

    #[test]
    fn members_arrive_in_order_with_decoded_keys() {
        let mut seen = [false; 2];
        Parser::document::<JsonError>(br#"{"k\u0065y": "v", "n": 42}"#, |p, key| {
            if key.eq_str("key") {
                assert!(p.string()?.eq_str("v"));
                seen[0] = true;
            } else if key.eq_str("n") {
                assert_eq!(p.number()?.as_u64(), Some(42));
                seen[1] = true;
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, [true, true]);
    }

    #[test]
    fn escapes_decode_to_their_characters() {
        let text = br#""a\n\u00e9\ud83d\ude00\/""#;
        let s = Parser::new(text).string().unwrap();
        let mut out = [0u8; 16];
        assert_eq!(s.decode_into(&mut out).unwrap(), "a\né😀/".as_bytes());
        assert!(s.decode_into(&mut [0u8; 3]).is_none());
    }

    #[test]
    fn top_level_must_be_an_object() {
        assert_eq!(kind("[]"), JsonErrorKind::Expected(ValueKind::Object));
        assert_eq!(kind(""), JsonErrorKind::UnexpectedEnd);
    }

    #[test]
    fn truncated_text_is_unexpected_end() {
        for text in [r#"{"a""#, r#"{"a":"#, r#"{"a":[1,"#, r#"{"a":"x"#, r#"{"a":tr"#, r#"{"a":"\u00"#, "{"] {
            assert_eq!(kind(text), JsonErrorKind::UnexpectedEnd, "{text}");
        }
    }

    #[test]
    fn nesting_is_limited() {
        let mut text = [b'['; 200];
        text[..6].copy_from_slice(br#"{"a": "#);
        let err = Parser::document(&text, |p, _| p.skip()).unwrap_err();
        assert_eq!(err.kind, JsonErrorKind::TooDeep);
    }

    #[test]
    fn malformed_strings_are_refused() {
        assert_eq!(kind(r#"{"a":"\x"}"#), JsonErrorKind::BadEscape);
        assert_eq!(kind(r#"{"a":"\ud800"}"#), JsonErrorKind::BadEscape);
        assert_eq!(kind(r#"{"a":"\udc00"}"#), JsonErrorKind::BadEscape);
        assert_eq!(kind("{\"a\":\"\x01\"}"), JsonErrorKind::ControlCharacter);
        assert_eq!(skip_all_bytes(b"{\"a\":\"\xff\"}").unwrap_err().kind, JsonErrorKind::BadUtf8);
    }

    fn skip_all_bytes(text: &[u8]) -> Result<(), JsonError> {
        Parser::document(text, |p, _| p.skip())
    }

    #[test]
    fn malformed_numbers_are_refused() {
        for text in [r#"{"a":-}"#, r#"{"a":1.}"#, r#"{"a":1e}"#, r#"{"a":01}"#, r#"{"a":.5}"#] {
            assert!(skip_all(text).is_err(), "{text}");
        }
        assert_eq!(kind(r#"{"a":1.}"#), JsonErrorKind::BadNumber);
    }

    #[test]
    fn separators_are_checked() {
        assert_eq!(kind(r#"{"a" 1}"#), JsonErrorKind::UnexpectedByte(b'1'));
        assert_eq!(kind(r#"{"a":1 "b":2}"#), JsonErrorKind::UnexpectedByte(b'"'));
        assert_eq!(kind(r#"{"a":[1 2]}"#), JsonErrorKind::UnexpectedByte(b'2'));
        assert_eq!(kind(r#"{"a":1,}"#), JsonErrorKind::UnexpectedByte(b'}'));
        assert_eq!(kind(r#"{1:1}"#), JsonErrorKind::UnexpectedByte(b'1'));
        assert_eq!(kind(r#"{"a":[1,]}"#), JsonErrorKind::UnexpectedByte(b']'));
    }

    #[test]
    fn trailing_data_is_refused() {
        assert_eq!(kind(r#"{} {}"#), JsonErrorKind::TrailingData);
        skip_all("{}\n\t ").unwrap();
    }

    #[test]
    fn wrong_value_type_is_reported() {
        let err = Parser::document::<JsonError>(br#"{"a": "1"}"#, |p, _| p.number().map(drop)).unwrap_err();
        assert_eq!(err, JsonError { kind: JsonErrorKind::Expected(ValueKind::Number), offset: 6 });
    }

    #[test]
    fn u64_values_need_plain_digits_in_range() {
        assert_eq!(parse_decimal_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_decimal_u64(b"18446744073709551616"), None);
        assert_eq!(parse_decimal_u64(b""), None);
        assert_eq!(parse_decimal_u64(b"-1"), None);
        assert_eq!(parse_decimal_u64(b"1 "), None);
        let n = Parser::new(b"1.0").number().unwrap();
        assert_eq!(n.as_u64(), None);
    }
}
