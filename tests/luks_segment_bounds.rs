//! The payload of a LUKS volume lies inside its device: a LUKS2 segment whose offset + size
//! wraps past 2^64 (which made reads at offset 2^64 - offset land on the header, and writes
//! overwrite it) or ends past the device, a segment starting inside the metadata, and a LUKS1
//! payload offset past the end are refused at open with typed errors.

mod common;
#[path = "common/luks2_json.rs"]
mod luks2_json;

use luks2_json::replace_once;
use qluks::crypto::{CipherSpec, HashAlg, OsRng, SectorCipher};
use qluks::io::{BlockIo, MemIo};
use qluks::luks::luks2::create::{self as luks2_create, CreateKdf, HDR_SIZE};
use qluks::luks::luks2::{self, Luks2CopyError, MetadataError};
use qluks::luks::{luks1, DataSegment, LuksError, LuksIoError, LuksVolume, OpenOptions};

const DATA_OFFSET: u64 = 1 << 20;
const PAYLOAD: u64 = 64 * 1024;
const DEVICE: u64 = DATA_OFFSET + PAYLOAD;
/// 2^64 - 4096: with 8192 bytes of segment, payload byte 4096 is device byte 0.
const WRAPPING: u64 = 0u64.wrapping_sub(4096);

fn luks2_disk() -> Vec<u8> {
    let mut disk = vec![0u8; DEVICE as usize];
    let params = luks2_create::CreateParams {
        cipher: CipherSpec::DEFAULT,
        sector_size: 512,
        kdf: CreateKdf::Pbkdf2 { hash: HashAlg::Sha256, iterations: 1000 },
        digest_iterations: 1000,
        data_offset: DATA_OFFSET,
    };
    luks2_create::format(&mut MemIo::new(&mut disk), &params, b"pw", &mut [], &mut OsRng).unwrap();
    disk
}

/// The data segment's `"offset":"..","size":"dynamic"` replaced.
fn with_segment(offset: u64, size: &str) -> Vec<u8> {
    let mut disk = luks2_disk();
    let from = format!("\"offset\":\"{DATA_OFFSET}\",\"size\":\"dynamic\"");
    let to = format!("\"offset\":\"{offset}\",\"size\":\"{size}\"");
    luks2_json::patch(&mut disk, HDR_SIZE as usize, |t| replace_once(t, &from, &to));
    disk
}

fn open(disk: &mut [u8]) -> Result<LuksVolume<MemIo<'_>>, LuksError> {
    LuksVolume::open(MemIo::new(disk), b"pw", OpenOptions::default()).map_err(|e| match e {
        LuksIoError::Luks(e) => e,
        LuksIoError::Io(e) => panic!("device error {e}"),
    })
}

#[test]
fn sized_segment_inside_the_device_opens() {
    // Control for the patching: a sized segment that fits reads and writes.
    let mut disk = with_segment(DATA_OFFSET, &PAYLOAD.to_string());
    let mut volume = open(&mut disk).unwrap();
    assert_eq!(volume.size(), PAYLOAD);
    let data = common::pattern(3, 4096);
    volume.write_at(PAYLOAD - 4096, &data).unwrap();
    let mut back = vec![0u8; 4096];
    volume.read_at(PAYLOAD - 4096, &mut back).unwrap();
    assert_eq!(back, data);
}

#[test]
fn segment_wrapping_past_2_pow_64_is_refused_at_open() {
    let mut disk = with_segment(WRAPPING, "8192");
    let header_before = disk[..4096].to_vec();
    assert_eq!(
        open(&mut disk).unwrap_err(),
        LuksError::SegmentPastEnd { offset: WRAPPING, size: 8192, device_size: DEVICE }
    );
    assert_eq!(disk[..4096], header_before[..], "the header is untouched");
}

#[test]
fn segment_ending_past_the_device_is_refused_at_open() {
    let size = 2 * PAYLOAD;
    let mut disk = with_segment(DATA_OFFSET, &size.to_string());
    assert_eq!(
        open(&mut disk).unwrap_err(),
        LuksError::SegmentPastEnd { offset: DATA_OFFSET, size, device_size: DEVICE }
    );
    // A dynamic segment starting past the end, likewise.
    let mut disk = with_segment(2 * DEVICE, "dynamic");
    assert_eq!(
        open(&mut disk).unwrap_err(),
        LuksError::PayloadPastEnd { payload_offset: 2 * DEVICE, device_size: DEVICE }
    );
}

#[test]
fn segment_starting_inside_the_metadata_is_refused() {
    // Past keyslot 0's area but inside the keyslots area (writes would overwrite metadata; a
    // segment over a keyslot's area is AreaOverlapsData).
    let offset = DATA_OFFSET / 2;
    let mut disk = with_segment(offset, "4096");
    let expected = MetadataError::SegmentOverlapsMetadata { segment: 0, offset, metadata_end: DATA_OFFSET };
    let e = Luks2CopyError::Metadata(expected);
    assert_eq!(
        open(&mut disk).unwrap_err(),
        LuksError::Luks2(luks2::Luks2Error::NoValidHeader { primary: e, secondary: e })
    );
}

/// A device as large as a u64 can say, that fails the test on any I/O.
struct Huge;

impl BlockIo for Huge {
    type Error = std::io::Error;
    fn read_at(&mut self, offset: u64, _: &mut [u8]) -> Result<(), Self::Error> {
        panic!("read at {offset:#x}")
    }
    fn write_at(&mut self, offset: u64, _: &[u8]) -> Result<(), Self::Error> {
        panic!("write at {offset:#x}")
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
    fn size(&mut self) -> Result<u64, Self::Error> {
        Ok(u64::MAX)
    }
}

#[test]
fn a_wrapping_segment_is_refused_even_on_a_device_of_2_pow_64_bytes() {
    // Read and write both go through the volume, which cannot be built.
    let cipher = SectorCipher::new(CipherSpec::DEFAULT, &[7u8; 64]).unwrap();
    let segment = DataSegment { offset: WRAPPING, size: Some(8192), sector_size: 512, iv_tweak: 0, cipher };
    match LuksVolume::new(Huge, segment) {
        Err(LuksIoError::Luks(e)) => {
            assert_eq!(e, LuksError::SegmentPastEnd { offset: WRAPPING, size: 8192, device_size: u64::MAX })
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn luks1_payload_offset_past_the_device_is_refused_at_open() {
    let spec = CipherSpec::DEFAULT;
    let (_, payload_offset) = luks1::layout(spec.key_bytes as u32);
    let mut disk = vec![0u8; payload_offset as usize * 512 + PAYLOAD as usize];
    let len = disk.len() as u64;
    let mut params =
        luks1::CreateParams { cipher: spec, hash: HashAlg::Sha256, iterations: luks1::Iterations::fixed(1000) };
    luks1::format(&mut MemIo::new(&mut disk), 0, &mut params, b"pw", &mut OsRng).unwrap();
    let past = (len / 512 + 8) as u32;
    disk[104..108].copy_from_slice(&past.to_be_bytes());
    assert_eq!(
        open(&mut disk).unwrap_err(),
        LuksError::PayloadPastEnd { payload_offset: u64::from(past) * 512, device_size: len }
    );
}

#[test]
fn a_segment_ends_at_its_last_whole_sector() {
    // 1000 bytes of 512-byte sectors: one sector; the partial second one would make a
    // read-modify-write reach past the segment.
    let mut device = vec![0u8; 4096];
    let cipher = SectorCipher::new(CipherSpec::DEFAULT, &[7u8; 64]).unwrap();
    let segment = DataSegment { offset: 1024, size: Some(1000), sector_size: 512, iv_tweak: 0, cipher };
    let mut volume = LuksVolume::new(MemIo::new(&mut device), segment).unwrap();
    assert_eq!(volume.size(), 512);
    match volume.write_at(600, &[1u8; 10]) {
        Err(LuksIoError::Luks(e)) => assert_eq!(e, LuksError::OutOfRange { offset: 600, len: 10, size: 512 }),
        other => panic!("expected a refusal, got {other:?}"),
    }
}
