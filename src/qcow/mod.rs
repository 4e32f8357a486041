//! qcow (version 1) images, read-only: QEMU's original copy-on-write format, still met as old
//! appliance disks and as qemu-img's `-O qcow` output.
//!
//! [`header`] parses the 48-byte header (pure); [`Qcow1`] maps guest offsets through the L1/L2
//! tables and reads data, compressed and legacy-AES clusters over a [`crate::io::BlockIo`] with
//! caller-owned scratch memory. Writing qcow v1 is out of scope.

mod error;
pub mod header;
mod reader;

pub use error::Error;
pub use header::{CryptMethod, HeaderError, QcowHeader};
pub use reader::{Extent, ExtentKind, Qcow1};
