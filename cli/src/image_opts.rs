//! qemu's `--image-opts` spelling of an image: `driver=qcow2,file.filename=PATH,
//! encrypt.key-secret=ID` (a `,,` is a literal comma), or the `json:{…}` filename form, parsed
//! into one typed [`ImageOpts`]; and [`ImageOptsArgs`], the `--object`/`--image-opts` flags a
//! verb flattens into its arguments.
use std::error::Error;
use std::path::{Path, PathBuf};

use clap::Args;

use crate::image_open::ChainArgs;
use crate::secret::{ObjectArgs, SecretArgs, Secrets};

/// An image as `--image-opts` (or a `json:` filename) names it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageOpts {
    /// The format driver (`qcow2`, `luks`, `raw`, `qcow`), when given.
    pub driver: Option<String>,
    /// The file (`file.filename`, or `file` as a string).
    pub filename: PathBuf,
    /// The id of the secret that unlocks the image (`encrypt.key-secret`, or `key-secret` for
    /// `driver=luks`).
    pub key_secret: Option<String>,
    /// Ids of the secrets of encrypted backing layers: (depth, id) from
    /// `backing.encrypt.key-secret` (depth 1), `backing.backing.…` (depth 2), ...
    pub backing_key_secrets: Vec<(usize, String)>,
}

/// Options qemu accepts that change nothing qluks does (caching, locking, node names).
const IGNORED: &[&str] = &[
    "node-name",
    "read-only",
    "auto-read-only",
    "force-share",
    "discard",
    "detect-zeroes",
    "cache.direct",
    "cache.no-flush",
    "file.locking",
    "file.aio",
    "file.node-name",
    "file.cache.direct",
    "file.cache.no-flush",
    "encrypt.format",
];

/// Splits a QemuOpts string at single commas (`,,` is a literal comma) into `key=value` pairs.
pub fn split_opts(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                cur.push(',');
            } else {
                parts.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
    }
    parts.push(cur);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => Err(format!("option '{}' has no value (expected name=value)", p.split('=').next().unwrap_or(""))),
        })
        .collect()
}

impl ImageOpts {
    /// Parses `--image-opts` text, or a `json:{…}` filename.
    pub fn parse(text: &str) -> Result<ImageOpts, String> {
        let pairs = match text.strip_prefix("json:") {
            Some(json) => json_pairs(json)?,
            None => split_opts(text)?,
        };
        ImageOpts::from_pairs(&pairs)
    }

    fn from_pairs(pairs: &[(String, String)]) -> Result<ImageOpts, String> {
        let mut o = ImageOpts::default();
        let mut filename = None;
        for (k, v) in pairs {
            let mut key = k.as_str();
            let mut depth = 0;
            while let Some(rest) = key.strip_prefix("backing.") {
                key = rest;
                depth += 1;
            }
            if depth > 0 {
                match key {
                    "encrypt.key-secret" | "key-secret" => o.backing_key_secrets.push((depth, v.clone())),
                    "driver" | "file.filename" | "file.driver" | "file" => {
                        return Err(format!(
                            "option '{k}': qluks opens backing files from the image's header, not from --image-opts"
                        ))
                    }
                    _ if IGNORED.contains(&key) => {}
                    _ => return Err(unsupported(&o, k)),
                }
                continue;
            }
            match key {
                "driver" => match v.as_str() {
                    "qcow2" | "luks" | "raw" | "qcow" => o.driver = Some(v.clone()),
                    _ => return Err(format!("Unknown driver '{v}' (qluks opens qcow2, luks, raw and qcow)")),
                },
                "file.filename" | "file" => filename = Some(PathBuf::from(v)),
                "file.driver" if v == "file" => {}
                "file.driver" => return Err(format!("Unknown protocol driver '{v}' (only 'file')")),
                "encrypt.key-secret" | "key-secret" => o.key_secret = Some(v.clone()),
                _ if IGNORED.contains(&key) => {}
                _ => return Err(unsupported(&o, k)),
            }
        }
        o.filename = filename.ok_or("no file name given (file.filename=PATH)")?;
        if o.filename.as_os_str().is_empty() {
            return Err("file.filename is empty".into());
        }
        Ok(o)
    }

    /// The format that `driver` names, checked against what the file holds.
    pub fn check_driver(&self, detected: crate::open::Format) -> Result<(), String> {
        match self.driver.as_deref() {
            Some(d) if d != detected.name() => {
                Err(format!("{}: driver={d} given, but the image is {}", self.filename.display(), detected.name()))
            }
            _ => Ok(()),
        }
    }
}

fn unsupported(o: &ImageOpts, key: &str) -> String {
    format!("Block format '{}' does not support the option '{key}'", o.driver.as_deref().unwrap_or("qcow2"))
}

/// A `json:` filename's object flattened into dotted `key=value` pairs, as qemu flattens it.
fn json_pairs(json: &str) -> Result<Vec<(String, String)>, String> {
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("invalid json: filename: {e}"))?;
    let mut out = Vec::new();
    flatten("", &value, &mut out)?;
    Ok(out)
}

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) -> Result<(), String> {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out)?;
            }
        }
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        Value::Number(n) => out.push((prefix.to_string(), n.to_string())),
        Value::Bool(b) => out.push((prefix.to_string(), if *b { "on" } else { "off" }.to_string())),
        Value::Null | Value::Array(_) => return Err(format!("json: filename: option '{prefix}' is not supported")),
    }
    Ok(())
}

/// qemu-img's `--object secret,…` and `--image-opts`, for a verb's arguments.
#[derive(Args, Clone, Debug, Default)]
pub struct ImageOptsArgs {
    #[command(flatten)]
    pub objects: ObjectArgs,
    /// The image argument is an option string, as for qemu-img:
    /// `driver=qcow2,file.filename=PATH,encrypt.key-secret=ID` (`key-secret=ID` for
    /// driver=luks, `backing.encrypt.key-secret=ID` for the backing file).
    #[arg(long)]
    pub image_opts: bool,
}

impl ImageOptsArgs {
    /// The parsed image argument, when `--image-opts` was given or it is a `json:` name.
    pub fn parse(&self, image: &Path) -> Result<Option<ImageOpts>, Box<dyn Error>> {
        let text = image.to_string_lossy();
        if !self.image_opts && !text.starts_with("json:") {
            return Ok(None);
        }
        Ok(Some(ImageOpts::parse(&text).map_err(|e| format!("Could not open '{text}': {e}"))?))
    }

    /// The file the image argument names (for verbs that unlock nothing).
    pub fn path(&self, image: &Path) -> Result<PathBuf, Box<dyn Error>> {
        self.objects.secrets()?;
        Ok(match self.parse(image)? {
            Some(o) => o.filename,
            None => image.to_path_buf(),
        })
    }

    /// Resolves the image argument in place: its file name replaces it, and the secrets it
    /// names become the passphrases of the image (`secret`) and its backing layers (`chain`).
    pub fn resolve(
        &self,
        image: &mut PathBuf,
        secret: &mut SecretArgs,
        chain: Option<&mut ChainArgs>,
    ) -> Result<(), Box<dyn Error>> {
        let secrets = self.objects.secrets()?;
        let Some(opts) = self.parse(image)? else { return Ok(()) };
        apply(&opts, &secrets, secret, chain)?;
        if let Ok(mut file) = std::fs::File::open(&opts.filename) {
            if let Ok(format) = crate::open::detect(&mut file) {
                opts.check_driver(format)?;
            }
        }
        *image = opts.filename;
        Ok(())
    }
}

/// Gives `secret` and `chain` the secrets `opts` names (an unknown id is reported when the
/// passphrase is needed, as qemu-img does).
pub fn apply(
    opts: &ImageOpts,
    secrets: &Secrets,
    secret: &mut SecretArgs,
    chain: Option<&mut ChainArgs>,
) -> Result<(), Box<dyn Error>> {
    if let Some(id) = &opts.key_secret {
        secret.key = Some(secrets.key(id));
    }
    if !opts.backing_key_secrets.is_empty() {
        let chain = chain.ok_or("backing.encrypt.key-secret is not used by this command")?;
        for (depth, id) in &opts.backing_key_secrets {
            chain.backing_keys.push((*depth, secrets.key(id)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_opts_parse_into_fields() {
        let o = ImageOpts::parse("driver=qcow2,file.filename=a,,b.qcow2,file.driver=file,encrypt.key-secret=sec0,backing.encrypt.key-secret=sec1,backing.backing.encrypt.key-secret=sec2").unwrap();
        assert_eq!(o.driver.as_deref(), Some("qcow2"));
        assert_eq!(o.filename, PathBuf::from("a,b.qcow2"));
        assert_eq!(o.key_secret.as_deref(), Some("sec0"));
        assert_eq!(o.backing_key_secrets, vec![(1, "sec1".to_string()), (2, "sec2".to_string())]);
        let l = ImageOpts::parse("driver=luks,file.filename=v.luks,key-secret=s").unwrap();
        assert_eq!(l.key_secret.as_deref(), Some("s"));
        assert!(ImageOpts::parse("driver=qcow2,file.filename=x,foo=1").unwrap_err().contains("'foo'"));
        assert!(ImageOpts::parse("driver=qcow2").is_err());
        assert!(ImageOpts::parse("driver=vmdk,file.filename=x").is_err());
        assert!(ImageOpts::parse("driver=qcow2,file.driver=nbd,file.filename=x").is_err());
    }

    #[test]
    fn json_filenames_flatten_like_qemu() {
        let o = ImageOpts::parse(
            r#"json:{"driver":"qcow2","file":{"driver":"file","filename":"x.qcow2"},"encrypt":{"key-secret":"s0"}}"#,
        )
        .unwrap();
        assert_eq!(o.filename, PathBuf::from("x.qcow2"));
        assert_eq!(o.key_secret.as_deref(), Some("s0"));
        let o = ImageOpts::parse(r#"json:{"driver":"luks","file":"v.luks","key-secret":"k"}"#).unwrap();
        assert_eq!(o.filename, PathBuf::from("v.luks"));
        assert!(ImageOpts::parse("json:{bad").is_err());
    }
}
