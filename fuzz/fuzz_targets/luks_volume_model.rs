#![no_main]
//! LUKS1 and LUKS2 volumes against a model, with simulated power loss.
//!
//! A volume is created in memory (`luks1::format` or `luks2::create::format`, PBKDF2 with 1
//! keyslot iteration and the 1000 digest iterations the formats require; aes-128-xts-plain64
//! or aes-128-cbc-essiv:sha256; LUKS2 sectors of 512..4096 bytes), then a fuzz-chosen list of
//! reads and writes (`write_at` and `write_in_place`) at arbitrary offsets and lengths (inside
//! the volume, across its end, near u64::MAX), flushes, LUKS1 keyslot adds and removes,
//! power losses and crashes in the middle of a write or a keyslot change runs on it and on a
//! model of the payload.
//!
//! Requests outside the volume must fail with `LuksError::OutOfRange` and change nothing;
//! inside it they must succeed and reads must return the model's bytes. Power loss
//! (`power_io.rs`, whole encryption sectors kept or lost: the device writes a sector
//! atomically): data is written in place, so after a power loss every encryption sector
//! reads as it was at the last completed flush or as some write since then left it (the model
//! records each sector's content after every write). Keyslot changes flush (so everything
//! written before them is durable); after a power loss, or a crash in the middle of an add or
//! remove, every passphrase the model holds for sure opens the volume, and the one being
//! added or removed opens it or fails as a wrong passphrase. After every power loss and at
//! the end, the volume is reopened with each remaining passphrase.
//!
//! Input: 3 option bytes (format and cipher, LUKS2 sector size, payload sectors), then
//! operations (see `Op::decode`).
use qluks::crypto::{CbcIv, CipherMode, CipherSpec, HashAlg, XtsIv};
use qluks::luks::luks1::{self, Iterations, Luks1Header};
use qluks::luks::luks2::create::{self as luks2_create, CreateKdf, KEYSLOTS_OFFSET};
use qluks::luks::{LuksError, LuksIoError, LuksVolume, OpenOptions};

#[path = "power_io.rs"]
mod power_io;
use power_io::{Loss, PowerError, PowerIo};

type Vol = LuksVolume<PowerIo>;

/// Power losses per input (each reopens the volume, which merges 4000 anti-forensic stripes).
const MAX_LOSSES: u32 = 4;
type LuksResult<T> = Result<T, LuksIoError<PowerError>>;

use power_io::Input;

use power_io::Rng;

#[derive(Debug, Clone)]
enum Op {
    Read {
        offset: u64,
        len: usize,
    },
    Write {
        offset: u64,
        len: usize,
        tag: u8,
        in_place: bool,
    },
    Flush,
    AddKey,
    RemoveKey(u8),
    PowerLoss(Loss, u8),
    /// `op` with the device dying after `writes` more writes, then a power loss.
    Crash {
        op: Box<Op>,
        writes: u64,
        loss: Loss,
        pick: u8,
    },
}

/// The offset an operation names: reduced into the volume, counted back from its end, counted
/// back from u64::MAX, or as given.
fn offset(mode: u8, raw: u64, size: u64) -> u64 {
    match mode & 3 {
        0 | 1 => raw % size.saturating_add(1),
        2 => size.wrapping_sub(raw % 70_000),
        _ if mode & 4 != 0 => u64::MAX - raw % 70_000,
        _ => raw,
    }
}

impl Op {
    fn decode(input: &mut Input, size: u64, nested: bool) -> Op {
        let kind = input.u8();
        let range = |input: &mut Input| {
            let off = offset(kind >> 4, input.u64(), size);
            let off = if kind & 8 != 0 { off / 512 * 512 } else { off };
            (off, usize::from(input.u16()) % (66 << 10))
        };
        match kind & 7 {
            0 | 1 => {
                let (offset, len) = range(input);
                Op::Read { offset, len }
            }
            2 | 3 => {
                let (offset, len) = range(input);
                Op::Write { offset, len, tag: input.u8(), in_place: kind & 1 != 0 }
            }
            4 => Op::Flush,
            5 if kind & 8 != 0 => Op::AddKey,
            5 => Op::RemoveKey(input.u8()),
            6 => Op::PowerLoss(Loss::from_input(input.u8(), input.u64()), input.u8()),
            _ if nested => Op::Flush,
            _ => {
                let writes = u64::from(input.u8());
                let op = Box::new(Op::decode(input, size, true));
                Op::Crash { op, writes, loss: Loss::from_input(input.u8(), input.u64()), pick: input.u8() }
            }
        }
    }
}

/// The bytes write `tag` puts at payload `offset..offset + len` (they change every 64 bytes).
fn pattern(tag: u8, offset: u64, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    let mut at = 0usize;
    while at < len {
        let pos = offset.wrapping_add(at as u64);
        let run = ((64 - pos % 64) as usize).min(len - at);
        data[at..at + run].fill(tag ^ (pos >> 6) as u8 ^ (pos >> 14) as u8);
        at += run;
    }
    data
}

struct Run {
    dev: PowerIo,
    luks1: bool,
    sector: usize,
    vol: Option<Vol>,
    /// The payload now, and at the last completed flush.
    cur: Vec<u8>,
    durable: Vec<u8>,
    /// (sector index, its content after a write) for every sector written since the flush.
    pending: Vec<(usize, Vec<u8>)>,
    /// LUKS1 keyslot -> passphrase (LUKS2: only slot 0).
    keys: Vec<(usize, Vec<u8>)>,
    next_key: u32,
    /// A keyslot changed (or a change was tried) since every passphrase was last tried.
    keys_changed: bool,
    /// An interrupted remove may have left a zombie keyslot (see `remove_key`).
    zombie: bool,
    /// Power losses so far (each reopens: slow; at most `MAX_LOSSES`).
    losses: u32,
    step: usize,
}

fn open(dev: &PowerIo, pass: &[u8]) -> LuksResult<Vol> {
    LuksVolume::open(dev.clone(), pass, OpenOptions::default())
}

impl Run {
    fn size(&self) -> u64 {
        self.cur.len() as u64
    }

    fn vol(&mut self) -> &mut Vol {
        self.vol.as_mut().expect("the volume is open")
    }

    fn flushed(&mut self) {
        self.durable.clone_from(&self.cur);
        self.pending.clear();
    }

    /// Runs a read, write or flush; `Err` only for a device error (a dying device).
    fn exec(&mut self, op: &Op) -> LuksResult<()> {
        let size = self.size();
        let step = self.step;
        match *op {
            Op::Read { offset, len } => {
                let in_range = offset.checked_add(len as u64).is_some_and(|end| end <= size);
                let mut buf = vec![0u8; len];
                match self.vol().read_at(offset, &mut buf) {
                    Ok(()) => {
                        assert!(in_range, "step {step}: a read at {offset:#x} len {len} accepted past {size:#x}");
                        let want = &self.cur[offset as usize..offset as usize + len];
                        assert!(buf == want, "step {step}: a read at {offset:#x} len {len} differs from the model");
                    }
                    Err(LuksIoError::Luks(LuksError::OutOfRange { .. })) if !in_range => {}
                    Err(e) => {
                        assert!(in_range, "step {step}: {op:?}: {e:?}");
                        return Err(e);
                    }
                }
            }
            Op::Write { offset, len, tag, in_place } => {
                let in_range = offset.checked_add(len as u64).is_some_and(|end| end <= size);
                let data = pattern(tag, offset, len);
                let before = (!in_range).then(|| self.dev.bytes());
                let mut buf = data.clone();
                let r = if in_place {
                    self.vol().write_in_place(offset, &mut buf)
                } else {
                    self.vol().write_at(offset, &data)
                };
                match r {
                    Err(LuksIoError::Luks(LuksError::OutOfRange { .. })) if !in_range => {
                        assert!(Some(self.dev.bytes()) == before, "step {step}: a refused write changed the device");
                        return Ok(());
                    }
                    Err(LuksIoError::Io(PowerError::Dead)) if in_range => {}
                    Err(e) => panic!("step {step}: {op:?}: {e:?}"),
                    Ok(()) => {
                        assert!(in_range, "step {step}: a write at {offset:#x} len {len} accepted past {size:#x}")
                    }
                }
                // The model: in place, sector by sector (each sector's new content recorded,
                // whether or not the write completed: a dying device may have taken it).
                let o = offset as usize;
                self.cur[o..o + len].copy_from_slice(&data);
                let s = self.sector;
                for k in o / s..(o + len).div_ceil(s) {
                    self.pending.push((k, self.cur[k * s..(k + 1) * s].to_vec()));
                }
                r?;
            }
            Op::Flush => {
                self.vol().flush()?;
                self.flushed();
            }
            _ => unreachable!(),
        }
        Ok(())
    }

    /// Adds a passphrase (LUKS1). Returns the passphrase tried and whether it was added.
    fn add_key(&mut self) -> (Vec<u8>, LuksResult<usize>) {
        let pass = format!("pass-{}", self.next_key).into_bytes();
        self.next_key += 1;
        let mut io = self.dev.clone();
        let r = (|| {
            let mut header = Luks1Header::read(&mut io, 0)?;
            let key = luks1::unlock(&mut io, 0, None, &header, &self.keys[0].1)?;
            luks1::add_keyslot(&mut io, 0, None, &mut header, &key, &pass, None, 1, &mut Rng(7))
        })();
        (pass, r)
    }

    /// Removes the passphrase `pick` (LUKS1; refused for the last one). `None` when the model
    /// holds one passphrase and an interrupted remove left a zombie keyslot: active in the
    /// header with its key material wiped (remove_keyslot wipes first, so that an old header
    /// copy cannot bring the passphrase back); remove_keyslot counts it as active and would
    /// remove the last working passphrase (reported; not exercised further here).
    fn remove_key(&mut self, pick: u8) -> Option<(usize, LuksResult<()>)> {
        if self.keys.len() == 1 && self.zombie {
            return None;
        }
        let i = usize::from(pick) % self.keys.len();
        let k = self.keys[i].0;
        let mut io = self.dev.clone();
        let r = (|| {
            let mut header = Luks1Header::read(&mut io, 0)?;
            luks1::remove_keyslot(&mut io, 0, None, &mut header, k, false, &mut Rng(8))
        })();
        Some((i, r))
    }

    fn keyslot_op(&mut self, op: &Op) -> LuksResult<()> {
        let step = self.step;
        if !self.luks1 {
            return Ok(());
        }
        self.keys_changed = true;
        match *op {
            Op::AddKey => match self.add_key() {
                (pass, Ok(k)) => {
                    self.keys.push((k, pass));
                    self.flushed();
                }
                (_, Err(LuksIoError::Luks(LuksError::NoFreeKeyslot))) => {}
                (_, Err(e @ LuksIoError::Io(PowerError::Dead))) => return Err(e),
                (_, Err(e)) => panic!("step {step}: adding a keyslot: {e:?}"),
            },
            Op::RemoveKey(pick) => match self.remove_key(pick) {
                None => {}
                Some((i, Ok(()))) => {
                    self.keys.remove(i);
                    self.flushed();
                }
                Some((_, Err(LuksIoError::Luks(LuksError::LastKeyslot { .. })))) => {}
                Some((_, Err(e @ LuksIoError::Io(PowerError::Dead)))) => return Err(e),
                Some((_, Err(e))) => panic!("step {step}: removing a keyslot: {e:?}"),
            },
            _ => unreachable!(),
        }
        Ok(())
    }

    /// Power loss: kill the device, drop the volume, keep what `loss` keeps, reopen with
    /// every passphrase, compare. `maybe`: a passphrase that may or may not open it, from an
    /// interrupted add (`true`) or remove (`false`).
    fn power_loss(&mut self, loss: Loss, pick: u8, maybe: Option<(Vec<u8>, bool)>) {
        let step = self.step;
        self.dev.kill();
        self.vol = None;
        self.dev.power_loss(loss);
        if let Some((pass, adding)) = maybe {
            // The keyslot that opens (an interrupted remove may leave its keyslot active
            // with destroyed key material, so the next add takes another one).
            let mut io = self.dev.clone();
            let opened = Luks1Header::read(&mut io, 0)
                .and_then(|header| luks1::unlock_keyslot(&mut io, 0, None, &header, &pass, None));
            match opened {
                Ok((k, _)) if adding => self.keys.push((k, pass)),
                Ok(_) => {}
                Err(LuksIoError::Luks(LuksError::WrongPassphrase)) => {
                    if !adding {
                        // Wiped, and maybe still active in the header (a zombie).
                        self.keys.retain(|(_, p)| *p != pass);
                        self.zombie = true;
                    }
                }
                Err(e) => panic!("step {step}: after power loss {loss:?}: opening with the changed passphrase: {e:?}"),
            }
        }
        // Every passphrase after keyslot changes (opening merges 4000 anti-forensic stripes:
        // slow), else the one `pick` names.
        if self.keys_changed {
            self.reopen_all(&format!("step {step}: after power loss {loss:?}"));
            self.keys_changed = false;
        }
        let i = usize::from(pick) % self.keys.len();
        self.vol = Some(open(&self.dev, &self.keys[i].1).unwrap_or_else(|e| {
            panic!("step {step}: after power loss {loss:?}: keyslot {} does not open: {e:?}", self.keys[i].0)
        }));
        let mut got = vec![0u8; self.cur.len()];
        self.vol().read_at(0, &mut got).unwrap_or_else(|e| panic!("step {step}: reading the payload: {e:?}"));
        let s = self.sector;
        for (k, sector) in got.chunks(s).enumerate() {
            if sector == &self.durable[k * s..(k + 1) * s] {
                continue;
            }
            let ok = self.pending.iter().any(|(j, c)| *j == k && c == sector);
            assert!(ok, "step {step}: after power loss {loss:?}: sector {k} is neither old nor new");
        }
        self.cur.clone_from(&got);
        self.durable = got;
        self.pending.clear();
    }

    /// Every passphrase the model holds opens the volume, to the same payload.
    fn reopen_all(&mut self, when: &str) {
        let mut first: Option<Vec<u8>> = None;
        for (k, pass) in &self.keys {
            let mut vol = open(&self.dev, pass).unwrap_or_else(|e| panic!("{when}: keyslot {k} does not open: {e:?}"));
            let mut head = vec![0u8; (self.cur.len()).min(4096)];
            vol.read_at(0, &mut head).unwrap_or_else(|e| panic!("{when}: reading: {e:?}"));
            match &first {
                Some(f) => assert!(*f == head, "{when}: keyslot {k} opens to other bytes"),
                None => first = Some(head),
            }
        }
    }

    fn crash(&mut self, op: &Op, writes: u64, loss: Loss, pick: u8) {
        self.keys_changed |= matches!(op, Op::AddKey | Op::RemoveKey(_));
        // `writes` bit 7: die at flush request `writes % 4 + 1` of the operation; else after
        // `writes % 128` writes.
        if writes & 128 != 0 {
            self.dev.die_at_flush(writes % 4 + 1);
        } else {
            self.dev.die_after(writes % 128);
        }
        let mut maybe = None;
        match op {
            Op::Read { .. } | Op::Write { .. } | Op::Flush => {
                let _ = self.exec(op);
            }
            Op::AddKey if self.luks1 => {
                let (pass, r) = self.add_key();
                match r {
                    Ok(k) => {
                        self.keys.push((k, pass));
                        self.flushed();
                    }
                    Err(LuksIoError::Io(PowerError::Dead)) => maybe = Some((pass, true)),
                    Err(LuksIoError::Luks(LuksError::NoFreeKeyslot)) => {}
                    Err(e) => panic!("step {}: adding a keyslot on a dying device: {e:?}", self.step),
                }
            }
            Op::RemoveKey(p) if self.luks1 => {
                let Some((i, r)) = self.remove_key(*p) else {
                    return self.power_loss(loss, pick, None);
                };
                match r {
                    Ok(()) => {
                        self.keys.remove(i);
                        self.flushed();
                    }
                    Err(LuksIoError::Io(PowerError::Dead)) => {
                        maybe = Some((self.keys[i].1.clone(), false));
                    }
                    Err(LuksIoError::Luks(LuksError::LastKeyslot { .. })) => {}
                    Err(e) => panic!("step {}: removing a keyslot on a dying device: {e:?}", self.step),
                }
            }
            _ => {}
        }
        self.power_loss(loss, pick, maybe);
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let b0 = input.u8();
    let luks1 = b0 & 1 == 0;
    let cipher = if b0 & 2 != 0 {
        CipherSpec { mode: CipherMode::Cbc(CbcIv::Essiv(HashAlg::Sha256)), key_bytes: 16 }
    } else {
        CipherSpec { mode: CipherMode::Xts(XtsIv::Plain64), key_bytes: 32 }
    };
    let sector = if luks1 { 512 } else { 512 << (input.u8() % 4) };
    // Payload: up to 64 KiB, whole sectors.
    let payload = (u64::from(input.u8()) * 256).next_multiple_of(sector as u64);
    let pass = b"pass-0".to_vec();
    let mut rng = Rng(u64::from(b0));
    let dev = PowerIo::new(Vec::new());
    dev.0.borrow_mut().atomic = sector as u64;
    let header_len = if luks1 {
        let (_, payload_offset) = luks1::layout(cipher.key_bytes as u32);
        let header_len = u64::from(payload_offset) * 512;
        dev.0.borrow_mut().cur = vec![0u8; (header_len + payload) as usize];
        let mut params = luks1::CreateParams {
            cipher,
            hash: HashAlg::Sha256,
            iterations: Iterations::Fixed { keyslot: 1, digest: 1000 },
        };
        luks1::format(&mut dev.clone(), 0, &mut params, &pass, &mut rng).expect("LUKS1 format");
        header_len
    } else {
        // Room for keyslot 0's material after the two headers, rounded to 4 KiB.
        let material = (cipher.key_bytes as u64 * 4000).next_multiple_of(4096);
        let header_len = KEYSLOTS_OFFSET + material;
        dev.0.borrow_mut().cur = vec![0u8; (header_len + payload) as usize];
        let params = luks2_create::CreateParams {
            cipher,
            sector_size: sector as u32,
            kdf: CreateKdf::Pbkdf2 { hash: HashAlg::Sha256, iterations: 1 },
            digest_iterations: 1000,
            data_offset: header_len,
        };
        luks2_create::format(&mut dev.clone(), &params, &pass, &mut [], &mut rng).expect("LUKS2 format");
        header_len
    };
    qluks::io::BlockIo::flush(&mut dev.clone()).expect("flush");
    {
        // The new volume's payload is whatever the device held (zeros, decrypted): the model
        // starts from it.
        let mut d = dev.0.borrow_mut();
        d.durable = d.cur.clone();
    }
    let mut vol = open(&dev, &pass).expect("opening the new volume");
    assert_eq!(vol.size(), payload, "the payload size ({header_len} bytes of header)");
    let mut cur = vec![0u8; payload as usize];
    vol.read_at(0, &mut cur).expect("reading the new volume");
    let durable = cur.clone();
    let mut run = Run {
        dev,
        luks1,
        sector,
        vol: Some(vol),
        cur,
        durable,
        pending: Vec::new(),
        keys: vec![(0, pass)],
        next_key: 1,
        keys_changed: false,
        zombie: false,
        losses: 0,
        step: 0,
    };
    let trace = std::env::var_os("LUKS_MODEL_TRACE").is_some();
    while !input.0.is_empty() && run.step < 48 {
        run.step += 1;
        let mut op = Op::decode(&mut input, run.size(), false);
        if matches!(op, Op::PowerLoss(..) | Op::Crash { .. }) {
            run.losses += 1;
            if run.losses > MAX_LOSSES {
                op = Op::Flush;
            }
        }
        if trace {
            eprintln!("step {}: {op:?}", run.step);
        }
        match op {
            Op::PowerLoss(loss, pick) => run.power_loss(loss, pick, None),
            Op::Crash { op, writes, loss, pick } => run.crash(&op, writes, loss, pick),
            Op::AddKey | Op::RemoveKey(_) => {
                if let Err(e) = run.keyslot_op(&op) {
                    panic!("step {}: {op:?}: {e:?}", run.step);
                }
            }
            op => {
                if let Err(e) = run.exec(&op) {
                    panic!("step {}: {op:?}: {e:?}", run.step);
                }
            }
        }
    }
    // At the end: flushed, every passphrase, the whole payload.
    run.vol().flush().expect("the last flush");
    run.flushed();
    run.reopen_all("at the end");
    let mut vol = open(&run.dev, &run.keys[0].1).expect("reopening");
    let mut got = vec![0u8; run.cur.len()];
    vol.read_at(0, &mut got).expect("reading the payload");
    assert!(got == run.cur, "at the end: the payload differs from the model");
});
