//! `qluks demo`, the main job on a built-in default: it succeeds, prints its verification
//! lines (qluks creating, writing and verifying a LUKS qcow2 overlay on a LUKS qcow2 base,
//! confirmed by qemu-img check and compare where qemu-img exists; the qemu-made chain part only
//! where qemu-img and qemu-io exist) and cleans up after itself.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::process::Command;

#[test]
fn demo_verifies_backends_luks_round_trip_qcow2_writes_and_chain() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_qluks"));
    // The demo names its scratch directory after its process id: watch every qluks-demo-*
    // directory that did not exist before the run.
    let before = demo_dirs();
    let output = common::output(cmd.arg("demo"));
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
    // qluks creates and writes the LUKS qcow2 base and overlay and reads every byte back.
    assert!(out.contains("every byte of both, re-opened: as written"), "no qcow2 write verification:\n{out}");
    if common::tools("demo", &["qemu-img", "qemu-io"]) {
        assert!(
            out.contains("check: no errors in either image; compare: overlay identical to what was written"),
            "no qemu-img confirmation of the qcow2 writes:\n{out}"
        );
        assert!(out.contains("qcow2+LUKS writes: verified by qluks and by qemu-img"), "{out}");
        assert!(out.contains("qcow2+LUKS chain: identical to qemu-img"), "no qcow2 chain verification:\n{out}");
    } else {
        assert!(out.contains("skipped: qemu-img and qemu-io are not on PATH"), "no skip line:\n{out}");
    }
    let left: Vec<_> = demo_dirs().into_iter().filter(|d| !before.contains(d)).collect();
    assert!(left.is_empty(), "demo left {left:?} behind");
}

fn demo_dirs() -> Vec<std::path::PathBuf> {
    std::fs::read_dir(std::env::temp_dir())
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("qluks-demo-")))
                .collect()
        })
        .unwrap_or_default()
}
