//! qcow (version 1) images, read-only: QEMU's original copy-on-write format, still met as old
//! appliance disks and as qemu-img's `-O qcow` output.
//!
//! [`header`] parses the 48-byte header (pure); [`Qcow1`] maps guest offsets through the L1/L2
//! tables and reads data, compressed and legacy-AES clusters over a [`crate::io::BlockIo`] with
//! caller-owned scratch memory. Writing qcow v1 is out of scope.
//!
//! # Example
//!
//! A 1 MiB image with 4 KiB clusters whose first cluster holds data, built in memory (the
//! header, a one-entry L1 table at 4 KiB, an L2 table at 8 KiB, the data at 12 KiB):
//!
//! ```
//! use qluks::io::MemIo;
//! use qluks::qcow::{Qcow1, QcowHeader};
//!
//! # fn main() -> Result<(), qluks::qcow::Error<qluks::io::MemIoError>> {
//! # let mut image = vec![0u8; 16384];
//! # image[..4].copy_from_slice(b"QFI\xfb");
//! # image[4..8].copy_from_slice(&1u32.to_be_bytes()); // version
//! # image[24..32].copy_from_slice(&(1u64 << 20).to_be_bytes()); // size
//! # (image[32], image[33]) = (12, 9); // cluster_bits, l2_bits
//! # image[40..48].copy_from_slice(&4096u64.to_be_bytes()); // l1_table_offset
//! # image[4096..4104].copy_from_slice(&8192u64.to_be_bytes()); // L1[0] -> L2
//! # image[8192..8200].copy_from_slice(&12288u64.to_be_bytes()); // L2[0] -> data
//! # image[12288..].fill(0xab);
//! // `image` holds a qcow v1 file (qemu-img's `-O qcow`); any `BlockIo` works the same.
//! let header = QcowHeader::parse(&image)?;
//! let mut scratch = vec![0u8; Qcow1::<MemIo>::scratch_len(&header)]; // L2 table + cluster
//! let mut qcow = Qcow1::open(MemIo::new(&mut image), &mut scratch, None)?;
//! assert_eq!(qcow.size(), 1 << 20);
//!
//! let mut buf = [0u8; 8192];
//! qcow.read_at(0, &mut buf)?; // the data cluster, then an unallocated one
//! assert!(buf[..4096].iter().all(|&b| b == 0xab));
//! assert!(buf[4096..].iter().all(|&b| b == 0));
//! # Ok(())
//! # }
//! ```

mod error;
pub mod header;
mod reader;

pub use error::Error;
pub use header::{CryptMethod, HeaderError, QcowHeader};
pub use reader::{Extent, ExtentKind, Qcow1};
