//! Shared helpers for integration tests: external tools (qemu-img, qemu-io, cryptsetup) and
//! scratch directories.
//!
//! A test that needs a tool calls [`tool`] first: when the tool is missing it prints a SKIP line
//! and the test returns early, unless `QLUKS_REQUIRE_TOOLS=1` (CI), where a missing tool fails.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod counting_alloc;

/// Whether `name` can be run. Missing: SKIP (returns false) or panic under QLUKS_REQUIRE_TOOLS=1.
pub fn tool(test: &str, name: &str) -> bool {
    let found = Command::new(name).arg("--version").output().map(|o| o.status.success()).unwrap_or(false)
        || Command::new(name).arg("--help").output().is_ok();
    if found {
        return true;
    }
    if std::env::var("QLUKS_REQUIRE_TOOLS").as_deref() == Ok("1") {
        panic!("{test}: required tool `{name}` is missing (QLUKS_REQUIRE_TOOLS=1)");
    }
    println!("SKIP {test}: `{name}` not installed");
    false
}

/// Whether all of `names` can be run (see [`tool`]).
pub fn tools(test: &str, names: &[&str]) -> bool {
    names.iter().all(|n| tool(test, n))
}

/// Runs a command, panicking with its output when it fails. Returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    check(cmd, &out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Panics with the command's output unless it succeeded.
pub fn check(cmd: &Command, out: &Output) {
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A scratch directory removed on drop (kept when QLUKS_KEEP_TMP=1).
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh directory under the system temp dir, named after the test.
    pub fn new(test: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "qluks-{test}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var("QLUKS_KEEP_TMP").as_deref() != Ok("1") {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift), for test data and keys.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
