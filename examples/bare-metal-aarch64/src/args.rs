//! The job's parameters, from the semihosting command line: `key=value` words separated by
//! spaces (the first word, the kernel's file name, has no `=` and is skipped).

use core::fmt;

/// Longest passphrase accepted on the command line.
pub const MAX_PASSPHRASE: usize = 128;

/// What to read.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The disk's bytes as they are (tests the driver alone).
    Raw,
    /// The disk opened as an image by qluks (qcow2, LUKS, ...), backing files resolved to the
    /// other disks by serial number.
    Image,
}

/// A failure to provoke, to test that the program reports it and exits non-zero.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    DataAbort,
    StackOverflow,
    Panic,
}

pub struct Args<'a> {
    pub fault: Option<Fault>,
    /// `backend=soft`: leave the hal on its portable backend even where FEAT_AES exists (to
    /// measure what the ARMv8 backend gains, in the same run).
    pub soft_only: bool,
    pub source: Source,
    /// Serial number of the disk to open (`-device virtio-blk-device,serial=...`).
    pub disk: &'a [u8],
    pub passphrase: Option<&'a [u8]>,
    /// Passphrase of the backing image(s), when it differs from `passphrase`.
    pub backing_passphrase: Option<&'a [u8]>,
    pub offset: u64,
    pub length: u64,
    pub expected_sha256: [u8; 32],
}

#[derive(Debug)]
pub enum ArgsError<'a> {
    Missing(&'static str),
    Invalid { key: &'a str, value: &'a str },
    Unknown(&'a str),
}

impl fmt::Display for ArgsError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgsError::Missing(key) => write!(f, "missing argument {key}=..."),
            // Never echo a secret.
            ArgsError::Invalid { key, .. } if key.contains("passphrase") => write!(f, "invalid value for {key}"),
            ArgsError::Invalid { key, value } => write!(f, "invalid value for {key}: {value:?}"),
            ArgsError::Unknown(key) => write!(f, "unknown argument {key}"),
        }
    }
}

fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn parse_sha256(s: &str) -> Option<[u8; 32]> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        *byte = (hi << 4 | lo) as u8;
    }
    Some(out)
}

impl<'a> Args<'a> {
    pub fn parse(line: &'a str) -> Result<Args<'a>, ArgsError<'a>> {
        let mut source = Source::Image;
        let mut disk = None;
        let mut passphrase = None;
        let mut backing_passphrase = None;
        let mut offset = 0;
        let mut length = None;
        let mut sha256 = None;
        let mut fault = None;
        let mut soft_only = false;
        for word in line.split_ascii_whitespace() {
            let Some((key, value)) = word.split_once('=') else { continue };
            let invalid = ArgsError::Invalid { key, value };
            match key {
                "source" => {
                    source = match value {
                        "raw" => Source::Raw,
                        "image" => Source::Image,
                        _ => return Err(invalid),
                    }
                }
                "disk" => disk = Some(value.as_bytes()),
                "passphrase" | "backing_passphrase" => {
                    if value.len() > MAX_PASSPHRASE {
                        return Err(invalid);
                    }
                    let slot = if key == "passphrase" { &mut passphrase } else { &mut backing_passphrase };
                    *slot = Some(value.as_bytes());
                }
                "offset" => offset = parse_u64(value).ok_or(invalid)?,
                "length" => length = Some(parse_u64(value).ok_or(invalid)?),
                "backend" => {
                    soft_only = match value {
                        "soft" => true,
                        "auto" => false,
                        _ => return Err(invalid),
                    }
                }
                "fault" => {
                    fault = Some(match value {
                        "data-abort" => Fault::DataAbort,
                        "stack-overflow" => Fault::StackOverflow,
                        "panic" => Fault::Panic,
                        _ => return Err(invalid),
                    })
                }
                "sha256" => sha256 = Some(parse_sha256(value).ok_or(invalid)?),
                _ => return Err(ArgsError::Unknown(key)),
            }
        }
        Ok(Args {
            fault,
            soft_only,
            source,
            disk: disk.ok_or(ArgsError::Missing("disk"))?,
            passphrase,
            backing_passphrase,
            offset,
            length: length.ok_or(ArgsError::Missing("length"))?,
            expected_sha256: sha256.ok_or(ArgsError::Missing("sha256"))?,
        })
    }
}
