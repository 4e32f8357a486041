//! LUKS1: the phdr, its keyslots, unlock (also of the header QEMU embeds in qcow2), volume
//! creation and keyslot management.

mod create;
mod header;
mod keyslot;
mod keyslots;
mod unlock;

pub(crate) use create::uuid_v4;
pub use create::{calibrate, format, layout, CreateParams, Iterations, MIN_ITERATIONS};
pub use header::{Luks1Header, DIGEST_LEN, HEADER_LEN, KEYSLOTS, MAX_ITERATIONS, MIN_PAYLOAD_OFFSET};
pub use keyslot::{Luks1Keyslot, KEYSLOT_DISABLED, KEYSLOT_ENABLED, STRIPES};
pub use keyslots::{add_keyslot, change_passphrase, change_passphrase_with_limits, remove_keyslot};
pub use unlock::{unlock, unlock_keyslot, unlock_with_limits, verify_key};
