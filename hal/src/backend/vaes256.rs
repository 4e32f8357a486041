//! x86-64 VAES backend, 256-bit lanes. OWNED BY hal-vaes: this placeholder only keeps the
//! dispatch compiling until their kernels land. While `READY` is false the backend is not
//! offered by `Backend::available()` and the dispatcher never calls these functions.
use crate::key::RoundKeys;

/// Set to true when the kernels below are the real VAES ones.
pub(crate) const READY: bool = false;

/// XTS encryption of consecutive data units (contract kernel; placeholder: AES-NI).
#[target_feature(enable = "aes,sse2,pclmulqdq")]
pub(crate) unsafe fn xts_encrypt_units(
    data_keys: &RoundKeys,
    tweak_keys: &RoundKeys,
    data: &mut [u8],
    unit_size: usize,
    first_unit: u128,
) {
    super::aesni::xts_encrypt_units(data_keys, tweak_keys, data, unit_size, first_unit)
}

/// XTS decryption of consecutive data units (contract kernel; placeholder: AES-NI).
#[target_feature(enable = "aes,sse2,pclmulqdq")]
pub(crate) unsafe fn xts_decrypt_units(
    data_keys: &RoundKeys,
    tweak_keys: &RoundKeys,
    data: &mut [u8],
    unit_size: usize,
    first_unit: u128,
) {
    super::aesni::xts_decrypt_units(data_keys, tweak_keys, data, unit_size, first_unit)
}
