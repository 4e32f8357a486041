//! `qluks convert -O raw` of a qcow2 chain, in parallel.
//!
//! The copy goes in rounds of at most [`ROUND_JOBS`] jobs, so memory stays the same whatever
//! the image holds or claims: the allocation map of the next stretch of the disk is looked up
//! (table lookups only) and its stored data runs are cut into jobs of at most 4 MiB, which
//! worker threads then execute independently: one `pread` per job on the worker's own handle
//! of the layer's file, one batch decrypt in place ([`Qcow2::read_stored`]), one `pwrite` at
//! the guest offset. Ranges that read as zero stay holes; compressed clusters of the round are
//! decompressed after it through the chain.
use std::error::Error;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use qluks::qcow2::{Layer, Mapping};

use crate::image_open::{open_chain, ChainArgs, CliChain};
use crate::secret::SecretArgs;

/// Bytes per job: large enough that contiguous clusters become one I/O and one decrypt call.
const CHUNK: u64 = 4 << 20;

/// Jobs (stored runs and compressed clusters) looked up and executed per round: the job list
/// is all the memory the map takes, whatever the image.
const ROUND_JOBS: usize = 4096;
/// Most worker threads.
const MAX_WORKERS: usize = 8;
/// Stack of a worker thread (engine paths fit in 64 KiB).
const WORKER_STACK: usize = 256 << 10;

/// A stored run: `len` bytes at `host` in the file of layer `depth`, guest bytes from `guest`.
struct Job {
    guest: u64,
    len: u64,
    depth: usize,
    host: u64,
}

/// What one worker owns: its handles of the layers' files and of the output, its buffer.
struct Worker {
    files: Vec<File>,
    dst: File,
    buf: Vec<u8>,
}

/// Converts the qcow2 image at `src` to a sparse raw file at `dst`.
pub fn run(
    src: &Path,
    dst_path: &Path,
    secret: &SecretArgs,
    chain_args: &ChainArgs,
    snapshot: Option<&str>,
    progress: crate::progress::Progress,
) -> Result<(), Box<dyn Error>> {
    let mut chain = open_chain(src, secret, chain_args)?;
    // Like `qemu-img convert -l`, the output keeps the image's current size: a snapshot taken
    // before a resize reads as zeros past its own size.
    let out_size = chain.size();
    if let Some(wanted) = snapshot {
        let Some(Layer::Qcow2(top)) = chain.layers_mut()[0].as_mut() else { return Err("no qcow2 image".into()) };
        let key =
            wanted.strip_prefix("snapshot.id=").or_else(|| wanted.strip_prefix("snapshot.name=")).unwrap_or(wanted);
        let found = top.find_snapshot(key.as_bytes()).map_err(|e| format!("{}: snapshot {key}: {e}", src.display()))?;
        top.select_snapshot(&found).map_err(|e| format!("{}: {e}", src.display()))?;
    }
    let size = chain.size().min(out_size);
    let dst = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(dst_path)
        .map_err(|e| format!("{}: {e}", dst_path.display()))?;
    dst.set_len(out_size)?;

    let layers: Vec<&Layer<File, { crate::image_open::CACHE_SLICES }>> = chain.layers().collect();
    // The file each layer's data lives in (its external data file, else the image).
    let files: Vec<&File> = layers
        .iter()
        .map(|l| match l {
            Layer::Qcow2(q) => q.data_file().or(q.io()).ok_or("layer not open"),
            Layer::Raw { io, .. } => Ok(io),
        })
        .collect::<Result<_, _>>()?;
    // Unencrypted stored data needs no transformation: the kernel copies it file to file.
    let plain: Vec<bool> = layers
        .iter()
        .map(|l| match l {
            Layer::Qcow2(q) => !q.is_encrypted(),
            Layer::Raw { .. } => true,
        })
        .collect();
    // Bytes each layer's data file holds: stored data past its end reads as zeros.
    let stored_len: Vec<u64> = files
        .iter()
        .map(|f| f.metadata().map(|m| m.len()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", src.display()))?;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, MAX_WORKERS);
    // Everything a worker needs is made here, on this thread, once: the workers' copy path
    // allocates nothing (a thread that mallocs gets a glibc arena of its own).
    let mut states: Vec<Worker> = (0..workers)
        .map(|_| -> Result<Worker, Box<dyn Error>> {
            // Own open file descriptions (own file positions) for the kernel copies.
            let files = files
                .iter()
                .map(|f| File::open(format!("/proc/self/fd/{}", f.as_raw_fd())))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{}: {e}", src.display()))?;
            let dst =
                OpenOptions::new().write(true).open(dst_path).map_err(|e| format!("{}: {e}", dst_path.display()))?;
            Ok(Worker { files, dst, buf: vec![0u8; CHUNK as usize] })
        })
        .collect::<Result<_, _>>()?;
    drop(layers);
    let mut scratch = vec![0u8; chain.compressed_scratch_len()];
    let mut buf = vec![0u8; CHUNK as usize];

    let copied = AtomicU64::new(0);
    let mut jobs: Vec<Job> = Vec::with_capacity(ROUND_JOBS);
    let mut serial: Vec<(u64, u64)> = Vec::with_capacity(ROUND_JOBS);
    let mut offset = 0;
    while offset < size {
        // The next round's jobs: unmerged extents, each one run with contiguous host offsets
        // (merged ones, as map shows them, hide host offsets of encrypted layers and may join
        // discontiguous runs).
        jobs.clear();
        serial.clear();
        while offset < size && jobs.len() + serial.len() < ROUND_JOBS {
            let e = chain.extent_at(offset, CHUNK * (ROUND_JOBS - jobs.len() - serial.len()) as u64)?;
            offset += e.length;
            match e.mapping {
                Mapping::Data { host_offset } => {
                    let mut done = 0;
                    while done < e.length {
                        let len = (e.length - done).min(CHUNK);
                        jobs.push(Job { guest: e.start + done, len, depth: e.depth, host: host_offset + done });
                        done += len;
                    }
                }
                Mapping::Compressed { .. } => serial.push((e.start, e.length)),
                Mapping::Zero { .. } | Mapping::Unallocated { .. } => {}
            }
        }
        if !jobs.is_empty() {
            run_round(
                &chain,
                &jobs,
                &mut states,
                (&plain, &stored_len),
                &copied,
                Paths { src, dst: dst_path },
                &progress,
                size,
            )?;
        }
        for &(start, length) in &serial {
            let mut done = 0;
            while done < length {
                let n = (length - done).min(CHUNK);
                let out = &mut buf[..n as usize];
                chain
                    .read_at_with_scratch(start + done, out, &mut scratch)
                    .map_err(|e| format!("{}: {e}", src.display()))?;
                dst.write_all_at(out, start + done)?;
                done += n;
            }
        }
    }
    progress.finish();
    dst.sync_data()?;
    Ok(())
}

/// The source and destination, for messages.
#[derive(Clone, Copy)]
struct Paths<'a> {
    src: &'a Path,
    dst: &'a Path,
}

/// Executes one round of jobs on the workers (one thread each, for the round).
#[allow(clippy::too_many_arguments)]
fn run_round(
    chain: &CliChain,
    jobs: &[Job],
    states: &mut [Worker],
    (plain, stored_len): (&[bool], &[u64]),
    copied: &AtomicU64,
    paths: Paths<'_>,
    progress: &crate::progress::Progress,
    size: u64,
) -> Result<(), Box<dyn Error>> {
    let layers: Vec<&Layer<File, { crate::image_open::CACHE_SLICES }>> = chain.layers().collect();
    let next = AtomicUsize::new(0);
    let results: Vec<Result<(), String>> = std::thread::scope(|s| {
        let handles: Vec<_> = states
            .iter_mut()
            .take(jobs.len())
            .map(|w| {
                let (layers, next) = (&layers, &next);
                std::thread::Builder::new().stack_size(WORKER_STACK).spawn_scoped(s, move || -> Result<(), String> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(job) = jobs.get(i) else { return Ok(()) };
                        if plain[job.depth] && job.host >= stored_len[job.depth] {
                            // Past the end of the file: zeros, and the output holds a hole there.
                        } else if plain[job.depth] {
                            kernel_copy(&mut w.files[job.depth], job.host, &mut w.dst, job.guest, job.len)
                                .map_err(|e| format!("{}: {e}", paths.dst.display()))?;
                        } else {
                            let out = &mut w.buf[..job.len as usize];
                            match layers[job.depth] {
                                Layer::Qcow2(q) => q.read_stored(&mut w.files[job.depth], job.host, job.guest, out),
                                Layer::Raw { .. } => {
                                    w.files[job.depth].read_exact_at(out, job.host).map_err(qluks::qcow2::Error::Io)
                                }
                            }
                            .map_err(|e| format!("{}: {e}", paths.src.display()))?;
                            w.dst.write_all_at(out, job.guest).map_err(|e| format!("{}: {e}", paths.dst.display()))?;
                        }
                        let total = copied.fetch_add(job.len, Ordering::Relaxed) + job.len;
                        progress.set(total, size);
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h.join().unwrap_or_else(|_| Err("a worker panicked".into())),
                Err(e) => Err(format!("cannot start a worker thread: {e}")),
            })
            .collect()
    });
    for r in results {
        r?;
    }
    Ok(())
}

/// Copies `len` bytes from `src` at `from` to `dst` at `to` inside the kernel (`std::io::copy`
/// between files uses `copy_file_range`, or `sendfile` across file systems). Bytes past the end
/// of `src` are left as they are: holes in the pre-sized output, reading as zeros, as QEMU
/// reads them.
fn kernel_copy(src: &mut File, from: u64, dst: &mut File, to: u64, len: u64) -> std::io::Result<()> {
    src.seek(SeekFrom::Start(from))?;
    dst.seek(SeekFrom::Start(to))?;
    std::io::copy(&mut Read::by_ref(src).take(len), dst)?;
    Ok(())
}
