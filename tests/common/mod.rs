//! Shared helpers for integration tests: external tools (qemu-img, qemu-io, cryptsetup) and
//! scratch directories.
//!
//! A test that needs a tool calls [`tool`] first: when the tool is missing it prints a SKIP line
//! and the test returns early, unless `QLUKS_REQUIRE_TOOLS=1` (CI), where a missing tool fails.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod blocks;
pub mod counting_alloc;
pub mod crash;

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

/// How long one external command (qluks, qemu-img, cryptsetup, ...) may run in a test before
/// the watchdog kills it: `QLUKS_TEST_TIMEOUT` seconds, 300 by default.
pub fn command_timeout() -> Duration {
    let secs = std::env::var("QLUKS_TEST_TIMEOUT").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    Duration::from_secs(secs)
}

/// `cmd.output()` under a watchdog: stdin is null (as with `Command::output`), stdout and
/// stderr are captured, and a command still running after [`command_timeout`] is killed and
/// the test fails, naming the command, instead of stalling the suite. Every test runs external
/// programs through this (or [`run`], which calls it).
pub fn output(cmd: &mut Command) -> Output {
    output_within(cmd, command_timeout())
}

/// [`output`] with an explicit time limit.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    use std::io::Read;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    // Drain both pipes on threads so a chatty child never blocks on a full pipe.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap_or_else(|e| panic!("waiting for {cmd:?}: {e}")) {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let err = stderr.join().unwrap_or_default();
            panic!(
                "watchdog: {cmd:?} still running after {} s, killed\nstderr:\n{}",
                limit.as_secs(),
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: stdout.join().unwrap_or_default(), stderr: stderr.join().unwrap_or_default() }
}

/// Runs a command under the watchdog ([`output`]), panicking with its output when it fails.
/// Returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = output(cmd);
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

/// Runs `qemu-img ARGS` (under the watchdog), failing the test when it fails.
pub fn qemu_img(args: &[&str]) {
    run(Command::new("qemu-img").args(args));
}

/// Runs `qemu-io --object O... --image-opts OPTS -c CMD...`, failing the test when it fails.
pub fn qemu_io(objects: &[&str], image_opts: &str, cmds: &[&str]) {
    let mut c = Command::new("qemu-io");
    for o in objects {
        c.args(["--object", o]);
    }
    c.args(["--image-opts", image_opts]);
    for cmd in cmds {
        c.arg("-c").arg(cmd);
    }
    run(&mut c);
}

/// The guest content of an image as `qemu-img convert -O raw` sees it (`--object O...
/// --image-opts OPTS`), through a file in `dir`.
pub fn qemu_raw(dir: &TempDir, objects: &[&str], image_opts: &str) -> Vec<u8> {
    let out = dir.join("qemu.raw");
    let mut c = Command::new("qemu-img");
    c.arg("convert");
    for o in objects {
        c.args(["--object", o]);
    }
    c.args(["--image-opts", image_opts, "-O", "raw"]).arg(&out);
    run(&mut c);
    std::fs::read(out).unwrap()
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
