//! Opening a LUKS2 volume (both header copies, JSON metadata, Argon2 unlock), then reading and
//! writing its data, performs no heap allocation: memory comes from the caller.

mod common;

use qluks::io::MemIo;
use qluks::luks::luks2;
use qluks::luks::{LuksVolume, OpenOptions};

#[global_allocator]
static GLOBAL: common::counting_alloc::Counting = common::counting_alloc::Counting;

#[test]
fn luks2_open_read_and_write_allocate_nothing() {
    let test = "luks2_open_read_and_write_allocate_nothing";
    if !common::tool(test, "cryptsetup") {
        return;
    }
    let dir = common::TempDir::new(test);
    let image = dir.join("v.luks2");
    let key_file = dir.join("key");
    std::fs::write(&key_file, b"pw").unwrap();
    std::fs::File::create(&image).unwrap().set_len(17 << 20).unwrap();
    common::run(
        std::process::Command::new("cryptsetup")
            .args(["luksFormat", "--type", "luks2", "--batch-mode", "--pbkdf", "argon2id", "--pbkdf-memory", "64"])
            .args(["--pbkdf-force-iterations", "4", "--pbkdf-parallel", "1", "--sector-size", "4096", "--key-file"])
            .arg(&key_file)
            .arg(&image),
    );
    let mut disk = std::fs::read(&image).unwrap();
    let mut memory = vec![0u8; 1024 * 64];
    let mut json = vec![0u8; luks2::DEFAULT_JSON_BUFFER];
    let data = common::pattern(1, 3 * 4096 + 100);
    let mut back = vec![0u8; data.len()];

    let (result, allocations) = common::counting_alloc::count_allocations(|| {
        let options = OpenOptions { kdf_memory: Some(&mut memory), json_buffer: Some(&mut json), ..Default::default() };
        let mut volume = LuksVolume::open(MemIo::new(&mut disk), b"pw", options).map_err(|_| "open")?;
        volume.write_at(1000, &data).map_err(|_| "write")?;
        volume.read_at(1000, &mut back).map_err(|_| "read")?;
        Ok::<(), &str>(())
    });
    result.unwrap();
    assert_eq!(allocations, 0, "heap allocations during open + write + read");
    common::counting_alloc::assert_counter_sees_allocations();
    assert!(back == data);
}
