//! The job on an image: open the qcow2 chain on the virtio disks, unlock every layer, read.
//!
//! The disks are told apart by their virtio serial numbers: the top image is the disk named by
//! `disk=...`, and a backing file name found in an image (`base.qcow2`, or a path ending in it)
//! is resolved to the disk whose serial is that file name. A disk is handed out once, so a chain
//! that names a disk twice fails instead of looping.

use qluks::qcow2::backing::{BackingFormat, BackingRequest, Chain, DataFileRequest, Layer, Opened, Resolver};

use crate::virtio_blk::{VirtioBlk, MAX_DISKS, SERIAL_LEN};

/// Cached 4 KiB table slices per qcow2 layer (inline in the chain, a static in `.bss`).
pub const CACHE_SLICES: usize = 16;
/// Layers at most: the overlay, its base, and room for a deeper chain.
pub const DEPTH: usize = MAX_DISKS;

pub type DiskChain = Chain<VirtioBlk, CACHE_SLICES, DEPTH>;

/// The machine's disks as a backing-file resolver.
pub struct Disks<'a> {
    pub disks: [Option<VirtioBlk>; MAX_DISKS],
    /// Passphrase of the top image (depth 0).
    pub passphrase: Option<&'a [u8]>,
    /// Passphrase of the backing layers (depth >= 1); the top's when not given.
    pub backing_passphrase: Option<&'a [u8]>,
}

impl Disks<'_> {
    /// Takes the disk with serial number `serial` out of the table.
    pub fn take(&mut self, serial: &[u8]) -> Option<VirtioBlk> {
        self.disks.iter_mut().find(|d| d.as_ref().is_some_and(|d| d.serial() == serial))?.take()
    }
}

/// The file name part of a backing file name, as long as a serial number can be.
fn serial_for(name: &[u8]) -> &[u8] {
    let base = name.rsplit(|&b| b == b'/').next().unwrap_or(name);
    &base[..base.len().min(SERIAL_LEN)]
}

impl Resolver<VirtioBlk> for Disks<'_> {
    type Error = &'static str;

    fn open_backing(&mut self, request: &BackingRequest<'_>) -> Result<Opened<VirtioBlk>, &'static str> {
        let io = self.take(serial_for(request.name)).ok_or("no free disk has the backing file's name as serial")?;
        let identity = Some(io.base() as u64);
        // The image's own format extension, if any. Without one the chain fails: a disk's
        // format is not guessed from its first bytes (`probe_undeclared_format` stays false),
        // which a guest could have written.
        let format = request.format.and_then(BackingFormat::from_name);
        Ok(Opened { io, format, identity })
    }

    fn passphrase(&mut self, depth: usize) -> Option<&[u8]> {
        if depth == 0 {
            self.passphrase
        } else {
            self.backing_passphrase.or(self.passphrase)
        }
    }

    fn open_data_file(&mut self, _request: &DataFileRequest<'_>) -> Result<VirtioBlk, &'static str> {
        Err("external data files are not supported on this machine")
    }
}

/// The hal backend the top layer decrypts with (`None` for an unencrypted image).
pub fn top_backend(chain: &DiskChain) -> Option<qluks_hal::Backend> {
    match chain.top() {
        Some(Layer::Qcow2(q)) => q.cipher().map(|c| c.backend()),
        Some(Layer::Raw { .. }) | None => None,
    }
}
