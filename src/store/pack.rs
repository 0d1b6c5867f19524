//! Pack files: append-only files of object records (layout in `format`).
//!
//! Durability promise: `PackWriter::append` only places bytes in the page
//! cache; they are durable after the next `PackWriter::sync` returns Ok.
//! A record is never referenced by metadata before that.

use crate::error::{Error, Result};
use crate::format::{self, PACK_HEADER_LEN, PACK_TARGET_SIZE, RECORD_HEADER_LEN, RecordHeader};
use crate::ids::PackNo;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// Records larger than this are read through the page cache whatever the
/// access (a thread's O_DIRECT buffer grows to the largest it read).
const DIRECT_MAX: u64 = 1 << 20;

/// The file name of sealed pack `no`.
pub fn pack_name(no: PackNo) -> String {
    format!("{:016x}.pack", no.0)
}

/// The file name of the part of pack `no` from `start` on.
pub fn part_name(no: PackNo, start: u64) -> String {
    format!("{}{start:016x}.part", part_prefix(no))
}

/// What the names of pack `no`'s parts start with.
pub fn part_prefix(no: PackNo) -> String {
    format!("{:016x}-", no.0)
}

/// What a pack directory's file name is: (pack, None) for a sealed pack,
/// (pack, Some(start)) for a part; None for anything else.
pub fn parse_name(name: &str) -> Option<(PackNo, Option<u64>)> {
    if let Some(hex) = name.strip_suffix(".pack") {
        return u64::from_str_radix(hex, 16).ok().map(|n| (PackNo(n), None));
    }
    let (no, start) = name.strip_suffix(".part")?.split_once('-')?;
    Some((
        PackNo(u64::from_str_radix(no, 16).ok()?),
        Some(u64::from_str_radix(start, 16).ok()?),
    ))
}

pub fn pack_path(dir: &Path, no: PackNo) -> PathBuf {
    dir.join(pack_name(no))
}

/// Bytes the pack files (whole, and a replica's parts) in `dir` take.
pub fn packs_bytes(dir: &Path) -> Result<u64> {
    let mut n = 0;
    for e in std::fs::read_dir(dir).map_err(Error::io_at(dir))? {
        let e = e.map_err(Error::io_at(dir))?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with('.') && (name.ends_with(".pack") || name.ends_with(".part")) {
            n += e.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    Ok(n)
}

/// Part of a pack not yet sealed, as a replica holds it: the bytes of the
/// pack from `start` on, up to the part's length.
pub fn part_path(dir: &Path, no: PackNo, start: u64) -> PathBuf {
    dir.join(part_name(no, start))
}

/// Numbers of the packs present in `dir` (whole or as parts), sorted.
pub fn list_packs(dir: &Path) -> Result<Vec<PackNo>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(Error::io_at(dir))? {
        let name = e.map_err(Error::io_at(dir))?.file_name();
        if let Some((no, _)) = parse_name(&name.to_string_lossy()) {
            out.push(no);
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// A pack as a reader sees it: its file, or (a replica's unsealed pack)
/// its part files. Each part starts where one sync of the primary ended,
/// which is a record boundary, so even after a gap (a part lost or cut
/// short) the records of the later parts are found and read.
pub struct PackReader {
    /// (start, length, file), sorted by start; parts may leave gaps.
    segments: Vec<(u64, u64, File)>,
    /// The byte ranges held, (start, end), merged where parts touch or
    /// overlap, in order (derived from `segments` once, at open).
    runs: Vec<(u64, u64)>,
    pub whole: bool,
    /// A whole pack's file opened again with O_DIRECT, at its first
    /// random read (None: the filesystem refuses it).
    direct: OnceLock<Option<File>>,
    /// A direct read of this pack failed: the rest go through the cache.
    direct_failed: AtomicBool,
}

impl PackReader {
    fn new(segments: Vec<(u64, u64, File)>, whole: bool) -> PackReader {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for (s, l, _) in &segments {
            match runs.last_mut() {
                Some(last) if *s <= last.1 => last.1 = last.1.max(s + l),
                _ => runs.push((*s, s + l)),
            }
        }
        PackReader {
            segments,
            runs,
            whole,
            direct: OnceLock::new(),
            direct_failed: AtomicBool::new(false),
        }
    }

    pub fn open(dir: &Path, no: PackNo) -> Result<PackReader> {
        let whole = pack_path(dir, no);
        match File::open(&whole) {
            Ok(f) => {
                let len = f.metadata().map_err(Error::io_at(&whole))?.len();
                return Ok(PackReader::new(vec![(0, len, f)], true));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::IoAt {
                    path: whole,
                    source: e,
                });
            }
        }
        let mut segments = Vec::new();
        for e in std::fs::read_dir(dir).map_err(Error::io_at(dir))? {
            let name = e.map_err(Error::io_at(dir))?.file_name();
            if let Some((n, Some(start))) = parse_name(&name.to_string_lossy())
                && n == no
            {
                let path = part_path(dir, no, start);
                let f = match File::open(&path) {
                    Ok(f) => f,
                    // Replaced by the sealed pack since the listing.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return PackReader::open_whole_after_race(dir, no);
                    }
                    Err(e) => return Err(Error::IoAt { path, source: e }),
                };
                let len = f.metadata().map_err(Error::io_at(&path))?.len();
                segments.push((start, len, f));
            }
        }
        if segments.is_empty() {
            return Err(Error::IoAt {
                path: whole,
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        segments.sort_by_key(|s| s.0);
        Ok(PackReader::new(segments, false))
    }

    /// The sealed pack that replaced the parts while they were listed.
    fn open_whole_after_race(dir: &Path, no: PackNo) -> Result<PackReader> {
        let whole = pack_path(dir, no);
        let f = File::open(&whole).map_err(Error::io_at(&whole))?;
        let len = f.metadata().map_err(Error::io_at(&whole))?.len();
        Ok(PackReader::new(vec![(0, len, f)], true))
    }

    /// Bytes of the pack held without a gap from its start: what a
    /// replicator counts as shipped.
    pub fn len(&self) -> u64 {
        self.runs().first().filter(|r| r.0 == 0).map_or(0, |r| r.1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The byte ranges held, as (start, end), merged where parts touch or
    /// overlap, in order.
    pub fn runs(&self) -> &[(u64, u64)] {
        &self.runs
    }

    /// The file of a whole pack (None for a replica's parts).
    pub fn whole_file(&self) -> Option<&File> {
        self.whole.then(|| &self.segments[0].2)
    }

    /// The whole pack at `path` opened to read `len` bytes at `offset`
    /// past the page cache, when none of them is in it (None: read them
    /// through it). A random read then costs one disk read of its record
    /// instead of the kernel's readahead around it, new pages to fill and a
    /// copy (86 against 130 us for a 64 KiB record here); a record with a
    /// page cached (just written, or read by a neighbour) is read there.
    pub fn uncached(&self, path: &Path, offset: u64, len: u64) -> Option<&File> {
        if !self.whole || len > DIRECT_MAX || self.direct_failed.load(Ordering::Relaxed) {
            return None;
        }
        if crate::sys::cached_pages(&self.segments[0].2, offset, len)? != 0 {
            return None;
        }
        self.direct
            .get_or_init(|| crate::sys::open_direct(path).ok())
            .as_ref()
    }

    /// A read of the file [`uncached`](Self::uncached) gave failed (a
    /// filesystem that opens with O_DIRECT and then refuses its reads):
    /// this pack's reads go through the page cache from now on.
    pub fn direct_failed(&self, e: &std::io::Error) {
        if !self.direct_failed.swap(true, Ordering::Relaxed) {
            tracing::debug!("O_DIRECT read failed ({e}); reading through the page cache");
        }
    }

    /// `len` bytes at `offset`, from as many parts as they span.
    pub fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let eof = || std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        let end = offset.checked_add(len as u64).ok_or_else(eof)?;
        if self.whole {
            // One file, which may still grow (the primary's open pack):
            // check its length now, before allocating for a damaged length.
            let f = &self.segments[0].2;
            if end > f.metadata()?.len() {
                return Err(eof());
            }
            return read_at(f, offset, len);
        }
        if !self.runs().iter().any(|r| r.0 <= offset && end <= r.1) {
            return Err(eof());
        }
        let mut buf = vec![0u8; len];
        let mut at = offset;
        while at < end {
            // The part that holds `at` and reaches furthest.
            let (s, l, f) = self
                .segments
                .iter()
                .filter(|(s, l, _)| *s <= at && at < s + l)
                .max_by_key(|(s, l, _)| s + l)
                .ok_or_else(eof)?;
            let n = (s + l).min(end) - at;
            let dst = (at - offset) as usize;
            f.read_exact_at(&mut buf[dst..dst + n as usize], at - s)?;
            at += n;
        }
        Ok(buf)
    }

    /// Every well-formed record, in order: (header, payload offset). Each
    /// held run is scanned up to its end or a torn record. Payloads are
    /// not hash-checked here.
    pub fn scan(&self) -> Result<Vec<(RecordHeader, u64)>> {
        let mut out = Vec::new();
        for &(start, end) in self.runs() {
            let mut at = start;
            if start == 0 {
                let head = self
                    .read_at(0, PACK_HEADER_LEN as usize)
                    .map_err(Error::Io)?;
                format::check_magic(&head, format::PACK_MAGIC, "pack")?;
                at = PACK_HEADER_LEN;
            }
            while at + RECORD_HEADER_LEN as u64 <= end {
                let header = self
                    .read_at(at, RECORD_HEADER_LEN)
                    .map_err(Error::Io)
                    .and_then(|b| RecordHeader::decode(&b));
                let next = header.ok().and_then(|h| {
                    let payload = at + RECORD_HEADER_LEN as u64;
                    let after = payload + h.stored_len as u64;
                    (after <= end).then_some((h, payload, after))
                });
                match next {
                    Some((h, payload, after)) => {
                        out.push((h, payload));
                        at = after;
                    }
                    // A torn or damaged record: go on at the next part
                    // that starts after it (a record boundary), if any.
                    None => match self.segments.iter().map(|s| s.0).find(|s| *s > at) {
                        Some(s) if s < end => at = s,
                        _ => break,
                    },
                }
            }
        }
        Ok(out)
    }
}

/// The pack currently being appended to; created lazily on first append.
pub struct PackWriter {
    dir: PathBuf,
    next_no: PackNo,
    open: Option<OpenPack>,
    /// Packs sealed since the last sync whose data still needs a sync.
    unsynced_dir: bool,
    /// Whether written pages leave the page cache once on the disk
    /// ([`PackWriter::set_drop_behind`]).
    drop_behind: bool,
}

struct OpenPack {
    no: PackNo,
    /// Shared with a sync that runs outside the writer's lock.
    file: Arc<File>,
    len: u64,
    synced: u64,
    /// Bytes whose writeback has been started ([`WRITEBACK_STEP`]).
    written_back: u64,
    /// Bytes whose pages were dropped from the page cache (drop-behind).
    dropped: u64,
}

/// The open pack's pages are handed to the disk every this many bytes, so
/// that the fdatasync which seals it (under the writer's lock, every 128
/// MiB) waits for the last few MiB instead of the whole pack: a 4 GiB
/// sequential write otherwise stalled 32 times for a pack's flush.
const WRITEBACK_STEP: u64 = 8 << 20;

impl PackWriter {
    /// A writer that will create packs numbered after every existing pack:
    /// a pack from an earlier session is never appended to or overwritten.
    pub fn new(dir: &Path) -> Result<PackWriter> {
        let next = list_packs(dir)?.last().map_or(1, |p| p.0 + 1);
        Ok(PackWriter {
            dir: dir.to_path_buf(),
            next_no: PackNo(next),
            open: None,
            unsynced_dir: false,
            drop_behind: false,
        })
    }

    /// A writer for a store that never writes (its packs are elsewhere).
    pub fn unused(dir: &Path) -> PackWriter {
        PackWriter {
            dir: dir.to_path_buf(),
            next_no: PackNo(1),
            open: None,
            unsynced_dir: false,
            drop_behind: false,
        }
    }

    /// Drop-behind: the pages of what is appended leave the page cache once
    /// they are on the disk (a step behind the writeback, and at the seal).
    /// A pack is read back rarely (a cache miss, a prune), so keeping it
    /// cached only doubled what a write costs the page cache: the mount's
    /// own cache of the file holds the same bytes. Freed pages are reused
    /// by the next ones written, which on this project's VM made a 4 GiB
    /// write 1.7x faster (the hypervisor backs each new page at its first
    /// touch). Off while a replica still has to read the packs (it drops
    /// them once shipped).
    pub fn set_drop_behind(&mut self, on: bool) {
        self.drop_behind = on;
    }

    /// Numbers new packs from `no` on, if that is past the next number.
    pub fn skip_to(&mut self, no: PackNo) {
        if no > self.next_no {
            self.next_no = no;
        }
    }

    /// The number the next new pack gets.
    pub fn next_no(&self) -> PackNo {
        self.next_no
    }

    /// Appends one record (header and payload); returns (pack, offset of
    /// the payload).
    pub fn append(&mut self, rec: &[u8]) -> Result<(PackNo, u64)> {
        if self
            .open
            .as_ref()
            .is_some_and(|p| p.len >= PACK_TARGET_SIZE)
        {
            self.seal()?;
        }
        if self.open.is_none() {
            let no = self.next_no;
            let path = pack_path(&self.dir, no);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(Error::io_at(&path))?;
            self.next_no = PackNo(no.0 + 1);
            if let Err(e) = file.write_all_at(&format::pack_header(), 0) {
                // A full disk: the next append makes the next number, and
                // this file (never referenced) goes now.
                let _ = std::fs::remove_file(&path);
                return Err(Error::IoAt { path, source: e });
            }
            self.unsynced_dir = true;
            self.open = Some(OpenPack {
                no,
                file: Arc::new(file),
                len: PACK_HEADER_LEN,
                synced: 0,
                written_back: 0,
                dropped: 0,
            });
        }
        let p = self.open.as_mut().expect("opened above");
        let at = p.len;
        p.file
            .write_all_at(rec, at)
            .map_err(Error::io_at(pack_path(&self.dir, p.no)))?;
        p.len += rec.len() as u64;
        if p.len - p.written_back >= WRITEBACK_STEP {
            if self.drop_behind {
                // The step before this one, started a step ago: its wait is
                // short, and a failed write of it fails this append.
                crate::sys::drop_written(&p.file, p.dropped, p.written_back - p.dropped)
                    .map_err(Error::io_at(pack_path(&self.dir, p.no)))?;
                p.dropped = p.written_back;
            }
            // Only a head start for the seal's fdatasync: a failure here
            // is that sync's to report.
            let _ = crate::sys::start_writeback(&p.file, p.written_back, p.len - p.written_back);
            p.written_back = p.len;
        }
        Ok((p.no, at + RECORD_HEADER_LEN as u64))
    }

    /// Makes every appended record durable: fdatasync of the open pack, and
    /// an fsync of the pack directory when a pack file was created.
    pub fn sync(&mut self) -> Result<()> {
        if let Some((no, file, len)) = self.sync_target()? {
            file.sync_data()
                .map_err(Error::io_at(pack_path(&self.dir, no)))?;
            self.synced_to(no, len);
        }
        Ok(())
    }

    /// What a sync outside the writer's lock has to make durable: the open
    /// pack's file and its length now (None when all of it is durable). The
    /// pack directory, when a pack was created in it, is synced here.
    /// Appends go on while that sync runs; [`PackWriter::synced_to`] then
    /// records how far it got.
    pub fn sync_target(&mut self) -> Result<Option<(PackNo, Arc<File>, u64)>> {
        if self.unsynced_dir {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(Error::io_at(&self.dir))?;
            self.unsynced_dir = false;
        }
        Ok(self
            .open
            .as_ref()
            .filter(|p| p.synced < p.len)
            .map(|p| (p.no, p.file.clone(), p.len)))
    }

    /// The first `len` bytes of pack `no` are durable (a sync of a
    /// [`PackWriter::sync_target`] finished).
    pub fn synced_to(&mut self, no: PackNo, len: u64) {
        if let Some(p) = self.open.as_mut()
            && p.no == no
            && p.synced < len
        {
            p.synced = len;
        }
    }

    /// The open pack and how many of its bytes are durable (a record
    /// boundary); every other pack in the directory is sealed.
    pub fn open_pack(&self) -> Option<(PackNo, u64)> {
        self.open.as_ref().map(|p| (p.no, p.synced))
    }

    /// Syncs and closes the open pack; it never changes again.
    pub fn seal(&mut self) -> Result<()> {
        self.sync()?;
        let sealed = self.open.take();
        if self.drop_behind
            && let Some(p) = sealed
        {
            // Synced: every page is clean. Only a hint.
            let _ = crate::sys::drop_cached(&p.file, p.dropped, p.len - p.dropped);
        }
        Ok(())
    }
}

/// Reads `len` bytes at `offset` of a pack file.
pub fn read_at(file: &File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}
