#![no_main]
//! Argon2's BlaMka kernels of this CPU against the portable one, and Argon2 itself against the
//! `argon2` crate. With choice bit 0 clear: one block step (`fill_block`, with and without
//! the xor of later passes) and the bare permutation, on blocks from the input at any
//! alignment, every kernel compared word for word with the portable one. With bit 0 set: a
//! whole derivation at small costs from the input (variant, 1-2 passes, 1-4 lanes, up to
//! 64 KiB, password, salt and output length) on every kernel, compared with the crate.
//!
//! Input: byte 0 = choices (bit 0 derivation, bit 1 xor, bits 2-3 alignment of the memory),
//! then for a block step 2048 bytes of prev and ref (zero-padded) and 1024 of dst; for a
//! derivation byte 1 = variant and passes, byte 2 = lanes and memory, byte 3 = output length,
//! byte 4 = password length, then the password and the salt.
use libfuzzer_sys::fuzz_target;
use qluks::crypto::argon2::{argon2_with_kernel, Input, Params, Sequential, Variant};
use qluks::hal::blamka::{fill_block, permute, BlamkaBackend, Block, BLOCK_BYTES, WORDS};

fn words(bytes: &[u8]) -> Block {
    core::array::from_fn(|k| u64::from_le_bytes(bytes[8 * k..8 * k + 8].try_into().unwrap()))
}

fn block_step(choices: u8, data: &[u8]) {
    let mut input = vec![0u8; 3 * BLOCK_BYTES];
    let n = data.len().min(input.len());
    input[..n].copy_from_slice(&data[..n]);
    let xor = choices & 2 != 0;
    let shift = usize::from(choices >> 2 & 3);
    let prev0 = words(&input[..BLOCK_BYTES]);
    let mut expected: Option<(Block, Vec<u8>)> = None;
    for kernel in std::iter::once(BlamkaBackend::Portable).chain(BlamkaBackend::available()) {
        let mut memory = vec![0u8; 2 * BLOCK_BYTES + shift];
        memory[shift..].copy_from_slice(&input[BLOCK_BYTES..]);
        let (refb, dst) = memory[shift..].split_at_mut(BLOCK_BYTES);
        let refb: &[u8; BLOCK_BYTES] = (&*refb).try_into().unwrap();
        let dst: &mut [u8; BLOCK_BYTES] = dst.try_into().unwrap();
        let (mut prev, mut tmp) = (prev0, [0u64; WORDS]);
        fill_block(kernel, &mut prev, refb, dst, xor, &mut tmp);
        assert_eq!(words(dst), prev, "{kernel}: the new block is in prev and in memory");
        match &expected {
            None => expected = Some((prev, memory)),
            Some((p, m)) => {
                assert_eq!(&prev, p, "{kernel} block step");
                assert_eq!(&memory, m, "{kernel} memory");
            }
        }
        let (mut a, mut b) = (prev0, prev0);
        permute(BlamkaBackend::Portable, &mut a);
        permute(kernel, &mut b);
        assert_eq!(a, b, "{kernel} permutation");
    }
}

fn derivation(data: &[u8]) {
    let [v, l, o, p, rest @ ..] = data else { return };
    let variant = [Variant::Argon2i, Variant::Argon2id, Variant::Argon2d][usize::from(v % 3)];
    let time = 1 + u32::from(v >> 2 & 1);
    let lanes = 1 + u32::from(l & 3);
    let memory_kib = (8 * lanes).max(8 + u32::from(l >> 2) % 57);
    let out_len = 4 + usize::from(*o % 80);
    let (password, salt) = rest.split_at(usize::from(*p).min(rest.len()));
    if salt.len() < 8 {
        return;
    }
    let algorithm = match variant {
        Variant::Argon2i => argon2::Algorithm::Argon2i,
        Variant::Argon2id => argon2::Algorithm::Argon2id,
        Variant::Argon2d => argon2::Algorithm::Argon2d,
    };
    let crate_params = argon2::Params::new(memory_kib, time, lanes, Some(out_len)).unwrap();
    let mut expected = vec![0u8; out_len];
    argon2::Argon2::new(algorithm, argon2::Version::V0x13, crate_params)
        .hash_password_into(password, salt, &mut expected)
        .unwrap();
    let params = Params { variant, time, memory_kib, lanes };
    let input = Input { password, salt, secret: &[], ad: &[] };
    for kernel in BlamkaBackend::available() {
        let mut memory = vec![0u8; params.memory_bytes().unwrap() as usize];
        let mut out = vec![0u8; out_len];
        argon2_with_kernel(&params, &input, &mut out, &mut memory, &Sequential, kernel).unwrap();
        assert_eq!(out, expected, "{kernel} {params:?}");
        assert!(memory.iter().all(|&b| b == 0), "the memory is wiped");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&choices, rest)) = data.split_first() else { return };
    if choices & 1 == 0 {
        block_step(choices, rest);
    } else {
        derivation(rest);
    }
});
