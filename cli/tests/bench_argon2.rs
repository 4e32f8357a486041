//! `qluks bench argon2`: one line per BlaMka kernel of this CPU, in the same run, and typed
//! refusals of kernels and costs it cannot run.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::process::Command;

const QLUKS: &str = env!("CARGO_BIN_EXE_qluks");

fn bench(args: &[&str]) -> std::process::Output {
    common::output(Command::new(QLUKS).args(["bench", "argon2"]).args(args))
}

#[test]
fn every_kernel_of_this_cpu_gets_a_json_line() {
    let out = bench(&["--memory-kib", "256", "--passes", "2", "--lanes", "2", "--kernel", "all", "--repeats", "3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let kernels: Vec<&str> = text
        .lines()
        .map(|line| {
            assert!(line.starts_with("argon2id 256 KiB, 2 passes, 2 lanes on "), "{line}");
            line.rsplit_once('[').unwrap().1.split(',').next().unwrap()
        })
        .collect();
    let expected: Vec<&str> = qluks_hal::blamka::BlamkaBackend::available().map(|b| b.name()).collect();
    assert_eq!(kernels, expected);
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        assert!(kernels.contains(&"avx2"), "{text}");
    }

    let out = bench(&["--memory-kib", "64", "--passes", "1", "--lanes", "1", "--output", "json", "--repeats", "1"]);
    let line = String::from_utf8(out.stdout).unwrap();
    let best = qluks_hal::blamka::BlamkaBackend::best().name();
    assert!(line.starts_with("{\"kdf\":\"argon2id\",\"memory_kib\":64,\"passes\":1,\"lanes\":1,"), "{line}");
    assert!(line.contains(&format!("\"kernel\":\"{best}\"")), "{line}");
}

#[test]
fn unknown_or_missing_kernels_and_bad_costs_are_refused() {
    let out = bench(&["--kernel", "sse9"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--kernel sse9: unknown kernel"));
    let missing = qluks_hal::blamka::BlamkaBackend::ALL.into_iter().find(|b| !b.is_available()).unwrap();
    let out = bench(&["--kernel", missing.name(), "--memory-kib", "64", "--passes", "1", "--lanes", "1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("lacks the instructions"), "{out:?}");
    let out = bench(&["--memory-kib", "8", "--lanes", "2"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid Argon2 costs"), "{out:?}");
}
