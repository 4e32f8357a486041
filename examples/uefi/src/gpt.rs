//! Finding a partition in a disk's GPT (with `gpt_disk_io`): by its unique GUID or its label.

use core::fmt;

use gpt_disk_io::gpt_disk_types::GptPartitionEntryArray;
use gpt_disk_io::Disk;
use qluks::io::BlockIo as _;
use uefi::boot::{self, SearchType};
use uefi::proto::media::block::BlockIO;
use uefi::Identify;

use crate::args::Partition;
use crate::disk::{DiskError, EfiDisk, GptView, Window};
use crate::pages::Pages;

/// What was found, for the console.
pub struct Found {
    pub disks: usize,
    pub first_lba: u64,
    pub last_lba: u64,
    pub block: usize,
    pub guid: uefi::Guid,
}

pub enum GptError {
    Firmware(&'static str, uefi::Status),
    NotFound { disks: usize, with_gpt: usize },
    Disk(DiskError),
}

impl fmt::Display for GptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GptError::Firmware(op, status) => write!(f, "{op} failed: {status:?}"),
            GptError::NotFound { disks, with_gpt } => {
                write!(f, "no partition with that GUID or label on {disks} disks ({with_gpt} of them with a valid GPT)")
            }
            GptError::Disk(e) => write!(f, "{e}"),
        }
    }
}

fn matches(entry: &gpt_disk_io::gpt_disk_types::GptPartitionEntry, want: Partition<'_>) -> bool {
    match want {
        Partition::Guid(guid) => {
            let unique = entry.unique_partition_guid;
            unique == guid
        }
        Partition::Label(label) => {
            let mut name = entry.name.chars();
            label.chars().all(|c| name.next() == Some(c)) && name.next().is_none_or(|c| c == '\0')
        }
    }
}

/// Looks at every whole disk the firmware knows (BlockIO handles that are not partitions),
/// validates its primary GPT (signature, header CRC, entry array CRC) and returns a window
/// onto the first partition that matches.
pub fn find_partition(want: Partition<'_>) -> Result<(Window, Found), GptError> {
    let handles = boot::locate_handle_buffer(SearchType::ByProtocol(&BlockIO::GUID))
        .map_err(|e| GptError::Firmware("LocateHandleBuffer(BlockIO)", e.status()))?;
    let mut disks = 0;
    let mut with_gpt = 0;
    let mut block_buf = [0u8; 4096];
    let mut entries = Pages::allocate(1 << 20).map_err(|e| GptError::Firmware("AllocatePages(GPT)", e.status()))?;
    for &handle in handles.iter() {
        let Ok(mut disk) = EfiDisk::open(handle) else { continue };
        if disk.is_logical_partition() || disk.block() > block_buf.len() {
            continue;
        }
        disks += 1;
        let block = disk.block();
        let mut gpt =
            Disk::new(GptView(&mut disk)).map_err(|_| GptError::Firmware("gpt_disk_io", uefi::Status::ABORTED))?;
        let Ok(header) = gpt.read_primary_gpt_header(&mut block_buf) else { continue };
        if !header.is_signature_valid() || header.header_crc32 != header.calculate_header_crc32() {
            continue;
        }
        let Ok(layout) = header.get_partition_entry_array_layout() else { continue };
        let Ok(array): Result<GptPartitionEntryArray, _> =
            gpt.read_gpt_partition_entry_array(layout, entries.as_mut_slice())
        else {
            continue;
        };
        if array.calculate_crc32() != header.partition_entry_array_crc32 {
            continue;
        }
        with_gpt += 1;
        let found = (0..layout.num_entries).find_map(|i| {
            let entry = array.get_partition_entry(i)?;
            (entry.is_used() && matches(entry, want)).then_some(*entry)
        });
        let Some(entry) = found else { continue };
        let (first, last) = (entry.starting_lba.to_u64(), entry.ending_lba.to_u64());
        drop(gpt);
        let size = disk.size().map_err(GptError::Disk)?;
        let (start, len) = match (first.checked_mul(block as u64), last.checked_sub(first)) {
            (Some(start), Some(n)) if n < size / block as u64 => (start, (n + 1) * block as u64),
            _ => return Err(GptError::Disk(DiskError::Unsupported("the partition's LBA range is invalid"))),
        };
        let window = Window::new(disk, start, len).map_err(GptError::Disk)?;
        return Ok((
            window,
            Found { disks, first_lba: first, last_lba: last, block, guid: entry.unique_partition_guid },
        ));
    }
    Err(GptError::NotFound { disks, with_gpt })
}
