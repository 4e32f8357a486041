//! A polling virtio-blk driver over virtio-mmio (QEMU `virt`), implementing `qluks::io::BlockIo`.
//!
//! `virt` has 32 virtio-mmio transports of 0x200 bytes from 0x0a00_0000. Both transport versions
//! are driven: modern (version 2, `-global virtio-mmio.force-legacy=false`) and legacy (version
//! 1, QEMU's default). One virtqueue per disk lives in a static page-aligned area, laid out the
//! legacy way (descriptors, available ring, used ring on the next page), which a modern device
//! accepts as well. One request at a time, three descriptors (header, data, status), completion
//! by polling the used ring: no interrupts, no heap.
//!
//! Memory is identity mapped (see `boot.rs`), so a buffer's address is its bus address: aligned
//! reads go straight into the caller's buffer; only the unaligned head and tail of a request go
//! through a one-sector bounce buffer. virtio devices are cache coherent, so ordering needs
//! barriers only, no cache maintenance.

use core::cell::UnsafeCell;
use core::fmt;
use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};
use core::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};

use crate::timer::Instant;

const MMIO_BASE: usize = 0x0a00_0000;
const MMIO_STRIDE: usize = 0x200;
const MMIO_SLOTS: usize = 32;

const MAGIC: u32 = 0x7472_6976; // "virt"
const DEVICE_ID_BLOCK: u32 = 2;

// Register offsets (virtio 1.2 §4.2.2; the legacy-only ones from §4.2.4).
const REG_MAGIC: usize = 0x000;
const REG_VERSION: usize = 0x004;
const REG_DEVICE_ID: usize = 0x008;
const REG_DEVICE_FEATURES: usize = 0x010;
const REG_DEVICE_FEATURES_SEL: usize = 0x014;
const REG_DRIVER_FEATURES: usize = 0x020;
const REG_DRIVER_FEATURES_SEL: usize = 0x024;
const REG_LEGACY_GUEST_PAGE_SIZE: usize = 0x028;
const REG_QUEUE_SEL: usize = 0x030;
const REG_QUEUE_NUM_MAX: usize = 0x034;
const REG_QUEUE_NUM: usize = 0x038;
const REG_LEGACY_QUEUE_ALIGN: usize = 0x03c;
const REG_LEGACY_QUEUE_PFN: usize = 0x040;
const REG_QUEUE_READY: usize = 0x044;
const REG_QUEUE_NOTIFY: usize = 0x050;
const REG_INTERRUPT_STATUS: usize = 0x060;
const REG_INTERRUPT_ACK: usize = 0x064;
const REG_STATUS: usize = 0x070;
const REG_QUEUE_DESC_LOW: usize = 0x080;
const REG_QUEUE_DESC_HIGH: usize = 0x084;
const REG_QUEUE_DRIVER_LOW: usize = 0x090;
const REG_QUEUE_DRIVER_HIGH: usize = 0x094;
const REG_QUEUE_DEVICE_LOW: usize = 0x0a0;
const REG_QUEUE_DEVICE_HIGH: usize = 0x0a4;
const REG_CONFIG_GENERATION: usize = 0x0fc;
/// virtio-blk config: `capacity` (u64, in 512-byte sectors) comes first.
const REG_CONFIG_CAPACITY: usize = 0x100;

const STATUS_ACKNOWLEDGE: u32 = 1;
const STATUS_DRIVER: u32 = 2;
const STATUS_DRIVER_OK: u32 = 4;
const STATUS_FEATURES_OK: u32 = 8;
const STATUS_FAILED: u32 = 128;

/// VIRTIO_F_VERSION_1 (feature bit 32): required on the modern transport.
const FEATURE_VERSION_1: u64 = 1 << 32;
/// The same bit in the upper feature word (`DeviceFeaturesSel` = 1).
const FEATURE_VERSION_1_HIGH: u32 = (FEATURE_VERSION_1 >> 32) as u32;

const VIRTQ_DESC_F_NEXT: u16 = 1;
const VIRTQ_DESC_F_WRITE: u16 = 2;
const VIRTQ_AVAIL_F_NO_INTERRUPT: u16 = 1;

const VIRTIO_BLK_T_IN: u32 = 0;
const VIRTIO_BLK_T_GET_ID: u32 = 8;
const VIRTIO_BLK_S_OK: u8 = 0;

pub const SECTOR: usize = 512;
const PAGE: usize = 4096;
/// Queue size: one request needs three descriptors; a few spare cost nothing.
const QUEUE_SIZE: usize = 8;
/// Largest single request. QEMU splits big requests itself; this bound keeps one request from
/// monopolising the device and matches common `size_max` values of real virtio hardware.
const MAX_REQUEST: usize = 1 << 20;
/// A request that has not completed after this long is reported instead of hanging forever.
const REQUEST_TIMEOUT_US: u64 = 10_000_000;
/// The most disks this program drives.
pub const MAX_DISKS: usize = 4;
/// Length of a virtio-blk serial number (`-device virtio-blk-device,serial=...`).
pub const SERIAL_LEN: usize = 20;

#[repr(C)]
struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

#[repr(C)]
struct Avail {
    flags: u16,
    idx: u16,
    ring: [u16; QUEUE_SIZE],
    used_event: u16,
}

#[repr(C)]
struct UsedElem {
    id: u32,
    len: u32,
}

#[repr(C, align(4096))]
struct Used {
    flags: u16,
    idx: u16,
    ring: [UsedElem; QUEUE_SIZE],
    avail_event: u16,
}

#[repr(C)]
struct BlkReqHeader {
    kind: u32,
    reserved: u32,
    sector: u64,
}

/// Everything the device reads or writes by DMA, per disk.
#[repr(C, align(4096))]
struct DmaArea {
    desc: [Desc; QUEUE_SIZE],
    avail: Avail,
    used: Used,
    header: BlkReqHeader,
    status: u8,
    bounce: [u8; SECTOR],
}

struct DmaSlot(UnsafeCell<DmaArea>);

// SAFETY: each slot is handed out at most once (see `TAKEN`), so no two references to one exist.
unsafe impl Sync for DmaSlot {}

impl DmaSlot {
    const fn empty() -> DmaSlot {
        DmaSlot(UnsafeCell::new(DmaArea {
            desc: [const { Desc { addr: 0, len: 0, flags: 0, next: 0 } }; QUEUE_SIZE],
            avail: Avail { flags: 0, idx: 0, ring: [0; QUEUE_SIZE], used_event: 0 },
            used: Used { flags: 0, idx: 0, ring: [const { UsedElem { id: 0, len: 0 } }; QUEUE_SIZE], avail_event: 0 },
            header: BlkReqHeader { kind: 0, reserved: 0, sector: 0 },
            status: 0,
            bounce: [0; SECTOR],
        }))
    }
}

static DMA: [DmaSlot; MAX_DISKS] = [const { DmaSlot::empty() }; MAX_DISKS];
static TAKEN: [AtomicBool; MAX_DISKS] = [const { AtomicBool::new(false) }; MAX_DISKS];

fn take_dma_area() -> Option<&'static mut DmaArea> {
    for (slot, taken) in DMA.iter().zip(&TAKEN) {
        if !taken.swap(true, Ordering::AcqRel) {
            // SAFETY: the flag was false, so this is the only reference ever made to the slot.
            return Some(unsafe { &mut *slot.0.get() });
        }
    }
    None
}

/// What went wrong on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtioError {
    /// The device refused the features or the queue during setup.
    SetupFailed { base: usize, step: &'static str },
    /// A request completed with a status other than OK.
    RequestFailed { sector: u64, status: u8 },
    /// A request did not complete within the timeout.
    Timeout { sector: u64 },
    /// An access past the end of the disk.
    OutOfRange { offset: u64, len: usize, size: u64 },
    /// This driver only reads.
    ReadOnly,
}

impl fmt::Display for VirtioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            VirtioError::SetupFailed { base, step } => write!(f, "virtio-mmio device at {base:#x}: {step}"),
            VirtioError::RequestFailed { sector, status } => {
                write!(f, "virtio-blk request at sector {sector} failed with status {status}")
            }
            VirtioError::Timeout { sector } => write!(f, "virtio-blk request at sector {sector} timed out"),
            VirtioError::OutOfRange { offset, len, size } => {
                write!(f, "read of {len} bytes at {offset:#x} is past the end of the disk ({size:#x} bytes)")
            }
            VirtioError::ReadOnly => f.write_str("the bare-metal virtio-blk driver is read-only"),
        }
    }
}

/// One virtio-blk disk.
pub struct VirtioBlk {
    base: usize,
    version: u32,
    dma: &'static mut DmaArea,
    capacity: u64,
    next_avail: u16,
    last_used: u16,
    serial: [u8; SERIAL_LEN],
}

/// Requests sent to all disks so far (the disks move into the image chain, the count stays).
static REQUESTS: AtomicU64 = AtomicU64::new(0);

/// Requests sent to all disks so far.
pub fn requests() -> u64 {
    REQUESTS.load(Ordering::Relaxed)
}

fn reg_read(base: usize, offset: usize) -> u32 {
    // SAFETY: `base` is one of the virtio-mmio windows of the `virt` board, mapped as Device
    // memory; registers are 32-bit and aligned.
    unsafe { read_volatile((base + offset) as *const u32) }
}

fn reg_write(base: usize, offset: usize, value: u32) {
    // SAFETY: as in `reg_read`.
    unsafe { write_volatile((base + offset) as *mut u32, value) }
}

/// Orders the CPU's memory writes before a following MMIO write (the notify) and MMIO reads
/// before later memory reads; `dsb` because the device is an observer outside the inner domain.
fn dsb() {
    // SAFETY: a barrier has no effect other than ordering.
    unsafe { core::arch::asm!("dsb sy", options(nostack, preserves_flags)) };
}

/// Finds and initialises every virtio-blk device, in transport order (QEMU fills the transports
/// from the highest address down, so the last `-device` on its command line comes first here;
/// tell disks apart by serial number, not by order).
pub fn discover() -> ([Option<VirtioBlk>; MAX_DISKS], usize) {
    let mut disks = [const { None }; MAX_DISKS];
    let mut count = 0;
    for slot in 0..MMIO_SLOTS {
        let base = MMIO_BASE + slot * MMIO_STRIDE;
        if reg_read(base, REG_MAGIC) != MAGIC || reg_read(base, REG_DEVICE_ID) != DEVICE_ID_BLOCK {
            continue;
        }
        if count == MAX_DISKS {
            crate::println!("virtio-blk at {base:#x}: ignored, more than {MAX_DISKS} disks");
            continue;
        }
        match VirtioBlk::init(base) {
            Ok(disk) => {
                disks[count] = Some(disk);
                count += 1;
            }
            Err(e) => crate::println!("{e}"),
        }
    }
    (disks, count)
}

impl VirtioBlk {
    fn init(base: usize) -> Result<VirtioBlk, VirtioError> {
        let version = reg_read(base, REG_VERSION);
        let fail = |step| {
            reg_write(base, REG_STATUS, STATUS_FAILED);
            VirtioError::SetupFailed { base, step }
        };
        if version != 1 && version != 2 {
            return Err(fail("unknown virtio-mmio version"));
        }
        let dma = take_dma_area().ok_or(VirtioError::SetupFailed { base, step: "no free queue memory" })?;

        reg_write(base, REG_STATUS, 0);
        reg_write(base, REG_STATUS, STATUS_ACKNOWLEDGE);
        reg_write(base, REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);

        // No optional feature is needed: plain reads of 512-byte sectors.
        reg_write(base, REG_DEVICE_FEATURES_SEL, 1);
        let high = reg_read(base, REG_DEVICE_FEATURES);
        reg_write(base, REG_DRIVER_FEATURES_SEL, 0);
        reg_write(base, REG_DRIVER_FEATURES, 0);
        let mut status = STATUS_ACKNOWLEDGE | STATUS_DRIVER;
        if version == 2 {
            if high & FEATURE_VERSION_1_HIGH == 0 {
                return Err(fail("modern transport without VIRTIO_F_VERSION_1"));
            }
            reg_write(base, REG_DRIVER_FEATURES_SEL, 1);
            reg_write(base, REG_DRIVER_FEATURES, FEATURE_VERSION_1_HIGH);
            status |= STATUS_FEATURES_OK;
            reg_write(base, REG_STATUS, status);
            if reg_read(base, REG_STATUS) & STATUS_FEATURES_OK == 0 {
                return Err(fail("features not accepted"));
            }
        } else {
            reg_write(base, REG_LEGACY_GUEST_PAGE_SIZE, PAGE as u32);
        }

        reg_write(base, REG_QUEUE_SEL, 0);
        let max = reg_read(base, REG_QUEUE_NUM_MAX) as usize;
        if max < QUEUE_SIZE {
            return Err(fail("queue 0 is too small"));
        }
        if version == 2 && reg_read(base, REG_QUEUE_READY) != 0 {
            return Err(fail("queue 0 already in use"));
        }
        reg_write(base, REG_QUEUE_NUM, QUEUE_SIZE as u32);
        dma.avail.flags = VIRTQ_AVAIL_F_NO_INTERRUPT;
        let desc = addr_of!(dma.desc) as u64;
        let avail = addr_of!(dma.avail) as u64;
        let used = addr_of!(dma.used) as u64;
        if version == 2 {
            for (low, value) in
                [(REG_QUEUE_DESC_LOW, desc), (REG_QUEUE_DRIVER_LOW, avail), (REG_QUEUE_DEVICE_LOW, used)]
            {
                reg_write(base, low, value as u32);
                reg_write(base, low + 4, (value >> 32) as u32);
            }
            debug_assert_eq!(REG_QUEUE_DESC_HIGH, REG_QUEUE_DESC_LOW + 4);
            debug_assert_eq!(REG_QUEUE_DRIVER_HIGH, REG_QUEUE_DRIVER_LOW + 4);
            debug_assert_eq!(REG_QUEUE_DEVICE_HIGH, REG_QUEUE_DEVICE_LOW + 4);
            fence(Ordering::SeqCst);
            reg_write(base, REG_QUEUE_READY, 1);
        } else {
            // Legacy: the device derives avail and used from the page number and the alignment.
            reg_write(base, REG_LEGACY_QUEUE_ALIGN, PAGE as u32);
            fence(Ordering::SeqCst);
            reg_write(base, REG_LEGACY_QUEUE_PFN, (desc / PAGE as u64) as u32);
        }
        status |= STATUS_DRIVER_OK;
        reg_write(base, REG_STATUS, status);

        let capacity = loop {
            let generation = reg_read(base, REG_CONFIG_GENERATION);
            let low = reg_read(base, REG_CONFIG_CAPACITY);
            let high = reg_read(base, REG_CONFIG_CAPACITY + 4);
            if version == 1 || reg_read(base, REG_CONFIG_GENERATION) == generation {
                break (u64::from(high) << 32 | u64::from(low)) * SECTOR as u64;
            }
        };

        let mut disk = VirtioBlk { base, version, dma, capacity, next_avail: 0, last_used: 0, serial: [0; SERIAL_LEN] };
        let mut serial = [0u8; SERIAL_LEN];
        // Devices without a serial answer GET_ID with an error or an empty string: not fatal.
        if disk.request(VIRTIO_BLK_T_GET_ID, 0, serial.as_mut_ptr(), SERIAL_LEN).is_ok() {
            disk.serial = serial;
        }
        Ok(disk)
    }

    /// The MMIO window of this device.
    pub fn base(&self) -> usize {
        self.base
    }

    /// The virtio-mmio transport version (1 = legacy, 2 = modern).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Size in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The serial number (`-device virtio-blk-device,serial=NAME`), without the NUL padding.
    pub fn serial(&self) -> &[u8] {
        let len = self.serial.iter().position(|&b| b == 0).unwrap_or(SERIAL_LEN);
        &self.serial[..len]
    }

    /// Runs one request whose data the device writes into `len` bytes at `data`, and waits for it.
    fn request(&mut self, kind: u32, sector: u64, data: *mut u8, len: usize) -> Result<(), VirtioError> {
        debug_assert!(len <= MAX_REQUEST);
        let dma = &mut *self.dma;
        dma.header = BlkReqHeader { kind, reserved: 0, sector };
        dma.status = 0xff;
        dma.desc[0] = Desc {
            addr: addr_of!(dma.header) as u64,
            len: size_of::<BlkReqHeader>() as u32,
            flags: VIRTQ_DESC_F_NEXT,
            next: 1,
        };
        dma.desc[1] =
            Desc { addr: data as u64, len: len as u32, flags: VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, next: 2 };
        dma.desc[2] = Desc { addr: addr_of!(dma.status) as u64, len: 1, flags: VIRTQ_DESC_F_WRITE, next: 0 };
        dma.avail.ring[usize::from(self.next_avail) % QUEUE_SIZE] = 0;
        self.next_avail = self.next_avail.wrapping_add(1);
        fence(Ordering::SeqCst);
        // SAFETY: a field of our own DMA area; volatile because the device reads it.
        unsafe { write_volatile(addr_of_mut!(dma.avail.idx), self.next_avail) };
        dsb();
        reg_write(self.base, REG_QUEUE_NOTIFY, 0);
        REQUESTS.fetch_add(1, Ordering::Relaxed);

        let start = Instant::now();
        // SAFETY: as above; the device writes `used.idx` when it completes the request.
        while unsafe { read_volatile(addr_of!(dma.used.idx)) } == self.last_used {
            if start.elapsed_us() > REQUEST_TIMEOUT_US {
                return Err(VirtioError::Timeout { sector });
            }
            core::hint::spin_loop();
        }
        self.last_used = self.last_used.wrapping_add(1);
        dsb();
        let irq = reg_read(self.base, REG_INTERRUPT_STATUS);
        if irq != 0 {
            reg_write(self.base, REG_INTERRUPT_ACK, irq);
        }
        // SAFETY: as above; the device wrote the status byte before publishing the used entry.
        let status = unsafe { read_volatile(addr_of!(dma.status)) };
        if status != VIRTIO_BLK_S_OK {
            return Err(VirtioError::RequestFailed { sector, status });
        }
        Ok(())
    }

    fn read_sectors(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), VirtioError> {
        debug_assert!(buf.len().is_multiple_of(SECTOR));
        let mut sector = sector;
        for chunk in buf.chunks_mut(MAX_REQUEST) {
            self.request(VIRTIO_BLK_T_IN, sector, chunk.as_mut_ptr(), chunk.len())?;
            sector += (chunk.len() / SECTOR) as u64;
        }
        Ok(())
    }

    /// Reads the sector holding byte `offset` into the bounce buffer and copies `out.len()`
    /// bytes from `offset` (which must stay within that sector).
    fn read_partial(&mut self, offset: u64, out: &mut [u8]) -> Result<(), VirtioError> {
        let sector = offset / SECTOR as u64;
        let within = (offset % SECTOR as u64) as usize;
        let bounce = addr_of_mut!(self.dma.bounce) as *mut u8;
        self.request(VIRTIO_BLK_T_IN, sector, bounce, SECTOR)?;
        out.copy_from_slice(&self.dma.bounce[within..within + out.len()]);
        Ok(())
    }
}

/// The driver is read-only: `BlockIo`'s default `write_at`/`flush` fail with this.
impl From<qluks::io::ReadOnly> for VirtioError {
    fn from(_: qluks::io::ReadOnly) -> Self {
        VirtioError::ReadOnly
    }
}

impl qluks::io::BlockIo for VirtioBlk {
    type Error = VirtioError;

    /// Whole sectors: the engines then read their metadata in whole aligned sectors and
    /// bounce only the unaligned ends of guest reads (this driver could do it too).
    fn block_size(&self) -> usize {
        SECTOR
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), VirtioError> {
        let out_of_range = VirtioError::OutOfRange { offset, len: buf.len(), size: self.capacity };
        let end = offset.checked_add(buf.len() as u64).ok_or(out_of_range)?;
        if end > self.capacity {
            return Err(out_of_range);
        }
        if buf.is_empty() {
            return Ok(());
        }
        let mut offset = offset;
        let mut buf = buf;
        let within = (offset % SECTOR as u64) as usize;
        if within != 0 {
            let n = (SECTOR - within).min(buf.len());
            let (head, rest) = buf.split_at_mut(n);
            self.read_partial(offset, head)?;
            offset += n as u64;
            buf = rest;
        }
        let aligned = buf.len() / SECTOR * SECTOR;
        let (middle, tail) = buf.split_at_mut(aligned);
        if !middle.is_empty() {
            self.read_sectors(offset / SECTOR as u64, middle)?;
            offset += aligned as u64;
        }
        if !tail.is_empty() {
            self.read_partial(offset, tail)?;
        }
        Ok(())
    }

    fn size(&mut self) -> Result<u64, VirtioError> {
        Ok(self.capacity)
    }
}
