//! The job's arguments, from the image's load options (what the UEFI shell passes after the
//! program's name): space-separated `key=value` words.
//!
//! | key | meaning |
//! |---|---|
//! | `job=luks2` | job A: unlock a LUKS2 partition found in a GPT (`part-guid=` or `part-label=`) |
//! | `job=qcow2` | job B: open `image=NAME`, a qcow2 chain in the ESP folder `folder=` |
//! | `job=disk-write` | a test of the BlockIO adapter: unaligned writes into a scratch partition, flushed, read back |
//! | `passphrase=`, `backing-passphrase=` | secrets for automated runs (else asked on the console) |
//! | `offset=`, `length=`, `sha256=` | the range to read and the digest it must have (disk-write: of the whole partition after the writes) |
//! | `argon2-max-mib=` | the most Argon2 memory a keyslot may claim (default 1024 MiB) |
//! | `paint-kib=` | how much stack below the entry to paint for the stack measurement (default 96) |
//! | `backend=soft` | decrypt with the portable backend (Arm; on x86 the soft-float build has only it) |
//! | `exit=qemu` | report the status to QEMU (isa-debug-exit on x86, semihosting on Arm) |
//!
//! Passphrases given here cannot contain spaces; the console takes any.

use uefi::CStr16;

/// Load options are copied into this many bytes (UCS-2 code units narrowed to ASCII).
pub const MAX_LINE: usize = 1024;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Job {
    Luks2,
    Qcow2,
    DiskWrite,
}

#[derive(Clone, Copy)]
pub enum Partition<'a> {
    Guid(uefi::Guid),
    Label(&'a str),
}

pub struct Args<'a> {
    pub job: Job,
    pub partition: Option<Partition<'a>>,
    pub folder: &'a str,
    pub image: &'a str,
    pub passphrase: Option<&'a [u8]>,
    pub backing_passphrase: Option<&'a [u8]>,
    pub offset: u64,
    pub length: u64,
    pub expected_sha256: [u8; 32],
    pub argon2_max_mib: u32,
    pub paint_kib: usize,
    /// `backend=soft`: decrypt with the portable backend even where the CPU has AES instructions.
    // (The soft-float x86 build has only the soft backend: nothing to choose.)
    #[cfg_attr(all(target_arch = "x86_64", not(target_feature = "sse2")), allow(dead_code))]
    pub soft: bool,
}

/// Copies the load options into `line` as ASCII (anything else is refused: the arguments are
/// file names, numbers and test passphrases); returns the filled part.
pub fn narrow<'l>(options: &CStr16, line: &'l mut [u8; MAX_LINE]) -> Result<&'l str, &'static str> {
    let mut len = 0;
    for c in options.iter() {
        let c = u16::from(*c);
        if c > 0x7e || (c < 0x20 && c != 0x09) {
            return Err("the load options hold a character outside printable ASCII");
        }
        *line.get_mut(len).ok_or("the load options are longer than 1024 characters")? = c as u8;
        len += 1;
    }
    core::str::from_utf8(&line[..len]).map_err(|_| "the load options are not ASCII")
}

fn number(key: &str, value: &str) -> Result<u64, &'static str> {
    let parsed = match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => value.parse(),
    };
    parsed.map_err(|_| match key {
        "offset" => "offset= is not a number",
        "length" => "length= is not a number",
        "argon2-max-mib" => "argon2-max-mib= is not a number",
        _ => "paint-kib= is not a number",
    })
}

fn hex32(value: &str) -> Result<[u8; 32], &'static str> {
    let bytes = value.as_bytes();
    if bytes.len() != 64 {
        return Err("sha256= must be 64 hex digits");
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let s = core::str::from_utf8(pair).map_err(|_| "sha256= must be 64 hex digits")?;
        out[i] = u8::from_str_radix(s, 16).map_err(|_| "sha256= must be 64 hex digits")?;
    }
    Ok(out)
}

impl<'a> Args<'a> {
    /// Parses `line` (the program's own name first, as the shell passes it).
    pub fn parse(line: &'a str) -> Result<Args<'a>, &'static str> {
        let mut job = None;
        let mut partition = None;
        let mut folder = "\\";
        let mut image = None;
        let mut passphrase = None;
        let mut backing_passphrase = None;
        let mut offset = 0;
        let mut length = None;
        let mut sha = None;
        let mut argon2_max_mib = 1024;
        let mut paint_kib = 96;
        let mut soft = false;
        for word in line.split_ascii_whitespace().skip(1) {
            let (key, value) = word.split_once('=').ok_or("arguments are key=value words")?;
            match key {
                "job" => {
                    job = Some(match value {
                        "luks2" => Job::Luks2,
                        "qcow2" => Job::Qcow2,
                        "disk-write" => Job::DiskWrite,
                        _ => return Err("job= is luks2, qcow2 or disk-write"),
                    })
                }
                "part-guid" => {
                    partition =
                        Some(Partition::Guid(uefi::Guid::try_parse(value).map_err(|_| "part-guid= is not a GUID")?))
                }
                "part-label" => partition = Some(Partition::Label(value)),
                "folder" => folder = value,
                "image" => image = Some(value),
                "passphrase" => passphrase = Some(value.as_bytes()),
                "backing-passphrase" => backing_passphrase = Some(value.as_bytes()),
                "offset" => offset = number(key, value)?,
                "length" => length = Some(number(key, value)?),
                "sha256" => sha = Some(hex32(value)?),
                "argon2-max-mib" => {
                    argon2_max_mib = u32::try_from(number(key, value)?).map_err(|_| "argon2-max-mib= is too large")?
                }
                "paint-kib" => {
                    paint_kib = usize::try_from(number(key, value)?).map_err(|_| "paint-kib= is too large")?
                }
                // Read by main before parsing (so that a bad argument still reaches QEMU).
                "exit" if value == "qemu" || value == "return" => {}
                "exit" => return Err("exit= is qemu or return"),
                "backend" => {
                    soft = match value {
                        "soft" => true,
                        "auto" => false,
                        _ => return Err("backend= is soft or auto"),
                    }
                }
                _ => return Err("unknown argument (see args.rs for the list)"),
            }
        }
        let job = job.ok_or("job= is missing")?;
        if job != Job::Qcow2 && partition.is_none() {
            return Err("job=luks2 and job=disk-write need part-guid= or part-label=");
        }
        if job == Job::Qcow2 && image.is_none() {
            return Err("job=qcow2 needs image=");
        }
        Ok(Args {
            job,
            partition,
            folder,
            image: image.unwrap_or(""),
            passphrase,
            backing_passphrase,
            offset,
            length: match job {
                Job::DiskWrite => length.unwrap_or(0),
                _ => length.ok_or("length= is missing")?,
            },
            expected_sha256: sha.ok_or("sha256= is missing")?,
            argon2_max_mib,
            paint_kib,
            soft,
        })
    }
}
