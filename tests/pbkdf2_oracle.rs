//! PBKDF2 against outside implementations computed at test time: Python's `hashlib.pbkdf2_hmac`
//! and `openssl kdf ... PBKDF2`, for every hash qluks supports. RIPEMD-160 matters most here:
//! qluks runs it on the `pbkdf2` crate, so only an outside oracle can catch a wrong result
//! (the SHA family has its own loop, which the unit tests also compare with that crate).

mod common;

use common::{run, tool, tools};
use qluks::crypto::{pbkdf2, HashAlg};
use std::process::Command;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// (password, salt, iterations, output length): short and empty inputs, a password longer than
/// every block size (hashed first), a salt longer than a block, outputs of one partial block up
/// to several blocks (more than the four chains qluks computes together).
fn cases() -> Vec<(Vec<u8>, Vec<u8>, u32, usize)> {
    vec![
        (b"password".to_vec(), b"salt".to_vec(), 1, 20),
        (b"password".to_vec(), b"salt".to_vec(), 2, 32),
        (Vec::new(), Vec::new(), 1, 1),
        (vec![0x61; 200], b"salt".to_vec(), 3, 150),
        (b"pw".to_vec(), vec![7; 80], 5, 64),
        (common::pattern(1, 129), common::pattern(2, 33), 1000, 333),
        (b"pass\0word".to_vec(), b"sa\0lt".to_vec(), 4096, 16),
    ]
}

fn ours(hash: HashAlg, (p, s, c, n): &(Vec<u8>, Vec<u8>, u32, usize)) -> String {
    let mut out = vec![0u8; *n];
    pbkdf2(hash, p, s, *c, &mut out).unwrap();
    hex(&out)
}

#[test]
fn pbkdf2_matches_python_hashlib_for_every_hash() {
    if !tool("pbkdf2_python", "python3") {
        return;
    }
    // One python run computes every (hash, case); arguments are hex, so any bytes pass.
    let script = "import hashlib,sys\n\
                  a=sys.argv[1:]\n\
                  for i in range(0,len(a),5):\n \
                  print(hashlib.pbkdf2_hmac(a[i],bytes.fromhex(a[i+1]),bytes.fromhex(a[i+2]),int(a[i+3]),int(a[i+4])).hex())\n";
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script]);
    let mut expected_ours = Vec::new();
    for hash in HashAlg::ALL {
        for case in cases() {
            cmd.args([hash.name().to_string(), hex(&case.0), hex(&case.1), case.2.to_string(), case.3.to_string()]);
            expected_ours.push((hash, case.2, case.3, ours(hash, &case)));
        }
    }
    let theirs = run(&mut cmd);
    let theirs: Vec<&str> = theirs.lines().collect();
    assert_eq!(theirs.len(), expected_ours.len(), "python printed {theirs:?}");
    for ((hash, c, n, ours), theirs) in expected_ours.iter().zip(theirs) {
        assert_eq!(ours, theirs, "{hash} c={c} len={n}: qluks and Python hashlib disagree");
    }
}

#[test]
fn pbkdf2_matches_openssl_kdf_for_every_hash() {
    if !tools("pbkdf2_openssl", &["openssl"]) {
        return;
    }
    for hash in HashAlg::ALL {
        for case in cases() {
            let (p, s, c, n) = &case;
            // Empty hexpass/hexsalt are accepted by `openssl kdf` and mean empty strings.
            let out = run(Command::new("openssl").args([
                "kdf".to_string(),
                "-keylen".to_string(),
                n.to_string(),
                "-kdfopt".to_string(),
                format!("digest:{}", hash.name().to_uppercase()),
                "-kdfopt".to_string(),
                format!("hexpass:{}", hex(p)),
                "-kdfopt".to_string(),
                format!("hexsalt:{}", hex(s)),
                "-kdfopt".to_string(),
                format!("iter:{c}"),
                "PBKDF2".to_string(),
            ]));
            let theirs: String = out.trim().split(':').collect::<String>().to_lowercase();
            assert_eq!(ours(hash, &case), theirs, "{hash} c={c} len={n}: qluks and openssl kdf disagree");
        }
    }
}
