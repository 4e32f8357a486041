//! PBKDF2 leaves no intermediate behind on the stack: after a derivation, the stack region its
//! frames used holds neither U_1 nor the last U_c of the first block (as hash state words or
//! as bytes), for every hash.
//!
//! The check reads the stack below the caller after the call returns (stale, uninitialized
//! memory: read with volatile loads, as a memory-disclosure bug or a core dump would see it).

use std::hint::black_box;
use std::mem::MaybeUninit;

use qluks::crypto::{pbkdf2, HashAlg};

const PASSWORD: &[u8] = b"correct horse battery staple";
const SALT: &[u8] = b"NaCl of 32 bytes, for a keyslot";
const ITERATIONS: u32 = 3;
/// Stack bytes scanned (and cleaned beforehand) below the caller's frame.
const REGION: usize = 64 * 1024;

/// Overwrites the stack region below the caller (so that only the call under test leaves data).
#[inline(never)]
fn clean_stack() {
    let mut area = [0u8; REGION];
    black_box(&mut area);
}

/// The stale contents of the stack region below the caller.
#[inline(never)]
fn stale_stack() -> Vec<u8> {
    let area = MaybeUninit::<[u8; REGION]>::uninit();
    let base = area.as_ptr() as *const u8;
    // SAFETY: `base..base + REGION` is this frame's own (uninitialized) array; volatile byte
    // loads observe whatever earlier frames left there, which is the point of the test.
    (0..REGION).map(|i| unsafe { std::ptr::read_volatile(base.add(i)) }).collect()
}

#[inline(never)]
fn derive(hash: HashAlg, out: &mut [u8]) {
    pbkdf2(hash, black_box(PASSWORD), black_box(SALT), black_box(ITERATIONS), out).unwrap();
}

/// `bytes` as the hash's state words in memory (SHA: big-endian digest words; RIPEMD-160:
/// little-endian, so the digest bytes themselves).
fn as_state_words(hash: HashAlg, bytes: &[u8]) -> Vec<u8> {
    match hash {
        HashAlg::Ripemd160 => bytes.to_vec(),
        HashAlg::Sha384 | HashAlg::Sha512 => {
            bytes.chunks(8).flat_map(|w| u64::from_be_bytes(w.try_into().unwrap()).to_ne_bytes()).collect()
        }
        _ => bytes.chunks(4).flat_map(|w| u32::from_be_bytes(w.try_into().unwrap()).to_ne_bytes()).collect(),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn no_u_block_is_left_on_the_stack() {
    for hash in HashAlg::ALL {
        let n = hash.digest_len();
        // The markers: U_1 and U_3 of block 1 (T_c = U_1 ^ ... ^ U_c).
        let block = |c: u32| {
            let mut out = vec![0u8; n];
            pbkdf2(hash, PASSWORD, SALT, c, &mut out).unwrap();
            out
        };
        let u1 = block(1);
        let u3: Vec<u8> = block(3).iter().zip(block(2)).map(|(a, b)| a ^ b).collect();
        let markers = [u1.clone(), u3.clone(), as_state_words(hash, &u1), as_state_words(hash, &u3)];

        let mut out = vec![0u8; n];
        clean_stack();
        derive(hash, &mut out);
        let stale = stale_stack();
        for (i, marker) in markers.iter().enumerate() {
            let at = stale.windows(16).position(|w| w == &marker[..16]);
            assert!(
                at.is_none(),
                "{hash}: marker {i} left on the stack, {:?} bytes below the caller",
                at.map(|a| REGION - a)
            );
        }
    }
}

#[inline(never)]
fn leave_marker() {
    let mut area = [0x5au8; 256];
    black_box(&mut area);
}

#[test]
fn the_scan_sees_what_a_returned_frame_left() {
    clean_stack();
    leave_marker();
    assert!(contains(&stale_stack(), &[0x5a; 16]));
}
