//! Strings an image supplies (backing file names, snapshot tags, feature names, LUKS labels and
//! UUIDs) reach the terminal escaped: no ESC, no newline that fakes a line of output, no bidi
//! override, in `info` and `snapshot -l`.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;

const QLUKS: &str = env!("CARGO_BIN_EXE_qluks");

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// stdout of a successful qluks run.
fn qluks(args: &[&str]) -> String {
    common::run(Command::new(QLUKS).args(args))
}

/// Fails when `out` holds a character a name could use to take over the terminal.
fn assert_terminal_safe(out: &str, what: &str) {
    for (i, c) in out.char_indices() {
        let bad = (c.is_control() && c != '\n') || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        assert!(!bad, "{what}: raw {c:?} at byte {i} of the output:\n{out}");
    }
}

const EVIL: &str = "x\u{1b}[2J\u{1b}]0;owned\u{7}\nkeyslot 7: active\u{202e}";
const EVIL_SHOWN: &str = "x\\u{1b}[2J\\u{1b}]0;owned\\u{7}\\nkeyslot 7: active\\u{202e}";

#[test]
fn qcow2_backing_name_and_snapshot_tag_are_escaped() {
    const TEST: &str = "qcow2_backing_name_and_snapshot_tag_are_escaped";
    if !common::tools(TEST, &["qemu-img"]) {
        return;
    }
    let dir = common::TempDir::new(TEST);
    let img = dir.join("e.qcow2");
    common::run(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2", s(&img), "1M"]));
    common::run(Command::new("qemu-img").args(["snapshot", "-c", EVIL, s(&img)]));
    // -u: the name is written as is, never opened.
    common::run(Command::new("qemu-img").args(["rebase", "-u", "-f", "qcow2", "-F", "raw", "-b", EVIL, s(&img)]));

    let info = qluks(&["info", s(&img)]);
    assert_terminal_safe(&info, "info");
    assert!(info.contains(&format!("backing file: {EVIL_SHOWN}")), "backing name not shown escaped:\n{info}");
    assert!(info.contains(EVIL_SHOWN.split('\\').next().unwrap()), "{info}");
    // The snapshot table is part of `info` and of `snapshot -l`.
    assert!(info.contains("x\\u{1b}[2J"), "snapshot tag not shown escaped in info:\n{info}");
    let list = qluks(&["snapshot", "-l", s(&img)]);
    assert_terminal_safe(&list, "snapshot -l");
    assert!(list.contains(EVIL_SHOWN), "snapshot tag not shown escaped:\n{list}");

    // JSON keeps the exact string (the encoder escapes it).
    let json: serde_json::Value = serde_json::from_str(&qluks(&["info", "--output", "json", s(&img)])).unwrap();
    assert_eq!(json["backing-filename"], EVIL);
    assert_eq!(json["snapshots"][0]["name"], EVIL);
}

#[test]
fn luks_label_and_uuid_are_escaped() {
    const TEST: &str = "luks_label_and_uuid_are_escaped";
    if !common::tools(TEST, &["cryptsetup"]) {
        return;
    }
    let dir = common::TempDir::new(TEST);
    let key = dir.join("key");
    std::fs::write(&key, b"pw").unwrap();
    // LUKS2: the label is the user's (cryptsetup takes any bytes).
    let v2 = dir.join("v2.luks");
    std::fs::write(&v2, vec![0u8; 16 << 20]).unwrap();
    let label = "l\u{1b}[31m\u{202e}";
    common::run(Command::new("cryptsetup").args(["luksFormat", "--batch-mode", "--type", "luks2"]).args([
        "--pbkdf",
        "pbkdf2",
        "--pbkdf-force-iterations",
        "1000",
        "--label",
        label,
        "--key-file",
        s(&key),
        s(&v2),
    ]));
    let info = qluks(&["info", s(&v2)]);
    assert_terminal_safe(&info, "LUKS2 info");
    assert!(info.contains("label: l\\u{1b}[31m\\u{202e}"), "label not shown escaped:\n{info}");

    // LUKS1: the UUID field is not covered by any checksum; an image can put anything there.
    let v1 = dir.join("v1.luks");
    std::fs::write(&v1, vec![0u8; 4 << 20]).unwrap();
    common::run(Command::new("cryptsetup").args(["luksFormat", "--batch-mode", "--type", "luks1"]).args([
        "--pbkdf-force-iterations",
        "1000",
        "--key-file",
        s(&key),
        s(&v1),
    ]));
    let mut bytes = std::fs::read(&v1).unwrap();
    let uuid = b"u\x1b[2J\nmk iterations: 1\0";
    bytes[168..168 + uuid.len()].copy_from_slice(uuid);
    std::fs::write(&v1, bytes).unwrap();
    let info = qluks(&["info", s(&v1)]);
    assert_terminal_safe(&info, "LUKS1 info");
    assert!(info.contains("uuid: u\\u{1b}[2J\\nmk iterations: 1\n"), "uuid not shown escaped:\n{info}");
}
