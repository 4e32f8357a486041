//! `qluks demo`, the main job on a built-in default: it succeeds, prints its verification
//! lines (the qcow2 chain part only where qemu-img and qemu-io exist) and cleans up after itself.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};

#[test]
fn demo_verifies_backends_luks_round_trip_and_qcow2_chain() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_qluks"));
    cmd.arg("demo").stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().expect("cannot run qluks demo");
    let scratch = std::env::temp_dir().join(format!("qluks-demo-{}", child.id()));
    let output = child.wait_with_output().expect("qluks demo did not finish");
    common::check(&cmd, &output);
    let out = String::from_utf8_lossy(&output.stdout);
    println!("{out}");
    for line in [
        "identical ciphertext, round trip ok",
        "identical to what was written",
        "refused: no keyslot matches the passphrase",
        "LUKS1 round trip: ok",
        "GB/s",
    ] {
        assert!(out.contains(line), "demo output lacks `{line}`:\n{out}");
    }
    if common::tools("demo", &["qemu-img", "qemu-io"]) {
        assert!(out.contains("qcow2+LUKS chain: identical to qemu-img"), "no qcow2 chain verification:\n{out}");
    } else {
        assert!(out.contains("skipped: qemu-img and qemu-io are not on PATH"), "no skip line:\n{out}");
    }
    assert!(!scratch.exists(), "demo left {} behind", scratch.display());
}
