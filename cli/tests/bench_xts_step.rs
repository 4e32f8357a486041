//! `qluks bench xts --tweak-step N`: times the stepped XTS batch path (LUKS2 4096-byte sectors
//! step their tweaks by 8) and says which step it timed; a step of 0 is refused by name.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::process::Command;

fn qluks(args: &[&str]) -> std::process::Output {
    common::output(Command::new(env!("CARGO_BIN_EXE_qluks")).args(args))
}

#[test]
fn bench_xts_reports_the_tweak_step_it_timed() {
    for step in ["1", "8", "4294967296"] {
        let out = qluks(&[
            "bench",
            "xts",
            "--sector-size",
            "4096",
            "--tweak-step",
            step,
            "--seconds",
            "0.05",
            "--output",
            "json",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8(out.stdout).unwrap();
        let line: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
        assert_eq!(line["tweak_step"].as_u64(), Some(step.parse().unwrap()), "{stdout}");
        assert_eq!(line["sector_size"].as_u64(), Some(4096));
        assert!(line["gbps"].as_f64().unwrap() > 0.0, "{stdout}");
    }
    let out = qluks(&["bench", "xts", "--decrypt", "--tweak-step", "8", "--seconds", "0.05"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("tweak step 8"));
}

#[test]
fn a_tweak_step_of_zero_is_refused() {
    let out = qluks(&["bench", "xts", "--tweak-step", "0", "--seconds", "0.05"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--tweak-step 0"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bench_xts_volume_times_the_luks_data_path_in_both_directions() {
    for (sector, step) in [("512", 1), ("4096", 8)] {
        for direction in [&[][..], &["--decrypt"][..]] {
            let mut args = vec!["bench", "xts", "--volume", "--sector-size", sector, "--batch", "65536"];
            args.extend(["--seconds", "0.05", "--output", "json"]);
            args.extend(direction);
            let out = qluks(&args);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let stdout = String::from_utf8(out.stdout).unwrap();
            let line: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
            assert_eq!(line["volume"].as_bool(), Some(true), "{stdout}");
            assert_eq!(line["tweak_step"].as_u64(), Some(step), "{stdout}");
            assert!(line["gbps"].as_f64().unwrap() > 0.0, "{stdout}");
        }
    }
    // The volume path runs on the backend qluks chooses, and derives its own step.
    for extra in [&["--backend", "soft"][..], &["--tweak-step", "8"][..]] {
        let mut args = vec!["bench", "xts", "--volume", "--seconds", "0.05"];
        args.extend(extra);
        let out = qluks(&args);
        assert!(!out.status.success(), "{extra:?}");
        assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    }
}
