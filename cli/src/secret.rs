//! Passphrases from the command line: a file (content used as is, like QEMU's `secret,file=`),
//! an environment variable, or a no-echo prompt when stdin is a terminal.
use std::error::Error;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use clap::Args;
use zeroize::Zeroizing;

/// A passphrase, wiped from memory on drop.
pub type Passphrase = Zeroizing<Vec<u8>>;

/// Where the passphrase of an existing keyslot comes from.
#[derive(Args, Clone, Debug, Default)]
pub struct SecretArgs {
    /// Read the passphrase from this file (every byte counts, a trailing newline too).
    #[arg(long, value_name = "FILE", conflicts_with = "passphrase_env")]
    pub passphrase_file: Option<PathBuf>,
    /// Read the passphrase from this environment variable.
    #[arg(long, value_name = "VAR")]
    pub passphrase_env: Option<String>,
}

/// Where a new passphrase comes from (`luks add-key`, `luks change-key`).
#[derive(Args, Clone, Debug, Default)]
pub struct NewSecretArgs {
    /// Read the new passphrase from this file (used as is).
    #[arg(long, value_name = "FILE", conflicts_with = "new_passphrase_env")]
    pub new_passphrase_file: Option<PathBuf>,
    /// Read the new passphrase from this environment variable.
    #[arg(long, value_name = "VAR")]
    pub new_passphrase_env: Option<String>,
}

impl SecretArgs {
    /// Whether a non-interactive source was given.
    pub fn is_given(&self) -> bool {
        self.passphrase_file.is_some() || self.passphrase_env.is_some()
    }

    /// The passphrase, prompting with `prompt` when no file or variable was given.
    pub fn get(&self, prompt: &str) -> Result<Passphrase, Box<dyn Error>> {
        get(self.passphrase_file.as_ref(), self.passphrase_env.as_deref(), prompt)
    }
}

impl NewSecretArgs {
    /// The new passphrase (prompted twice on a terminal).
    pub fn get(&self) -> Result<Passphrase, Box<dyn Error>> {
        if self.new_passphrase_file.is_none() && self.new_passphrase_env.is_none() {
            let first = prompt("New passphrase: ")?;
            let again = prompt("Repeat new passphrase: ")?;
            if first != again {
                return Err("the passphrases differ".into());
            }
            return Ok(first);
        }
        get(self.new_passphrase_file.as_ref(), self.new_passphrase_env.as_deref(), "New passphrase: ")
    }
}

fn get(file: Option<&PathBuf>, env: Option<&str>, prompt_text: &str) -> Result<Passphrase, Box<dyn Error>> {
    if let Some(path) = file {
        let bytes = std::fs::read(path).map_err(|e| format!("passphrase file {}: {e}", path.display()))?;
        return Ok(Zeroizing::new(bytes));
    }
    if let Some(var) = env {
        let value = std::env::var_os(var).ok_or_else(|| format!("environment variable {var} is not set"))?;
        return Ok(Zeroizing::new(value.into_encoded_bytes()));
    }
    prompt(prompt_text)
}

/// Reads one line from the terminal with echo off (the line end is not part of the passphrase).
fn prompt(text: &str) -> Result<Passphrase, Box<dyn Error>> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err("a passphrase is needed: use --passphrase-file, --passphrase-env or a terminal".into());
    }
    eprint!("{text}");
    std::io::stderr().flush()?;
    let stty = |arg: &str| Command::new("stty").arg(arg).stdin(Stdio::inherit()).status();
    let echo_off = stty("-echo").map(|s| s.success()).unwrap_or(false);
    let mut line = Zeroizing::new(String::new());
    let read = stdin.lock().read_line(&mut line);
    if echo_off {
        let _ = stty("echo");
    }
    eprintln!();
    read?;
    let trimmed = line.trim_end_matches(['\n', '\r']);
    Ok(Zeroizing::new(trimmed.as_bytes().to_vec()))
}
