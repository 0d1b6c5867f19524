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

pub fn pack_path(dir: &Path, no: PackNo) -> PathBuf {
    dir.join(format!("{:016x}.pack", no.0))
}

/// Part of a pack not yet sealed, as a replica holds it: the bytes of the
/// pack from `start` on, up to the part's length.
pub fn part_path(dir: &Path, no: PackNo, start: u64) -> PathBuf {
    dir.join(format!("{:016x}-{start:016x}.part", no.0))
}

/// Numbers of the packs present in `dir` (whole or as parts), sorted.
pub fn list_packs(dir: &Path) -> Result<Vec<PackNo>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(Error::io_at(dir))? {
        let name = e.map_err(Error::io_at(dir))?.file_name();
        let name = name.to_string_lossy();
        let hex = match (name.strip_suffix(".pack"), name.strip_suffix(".part")) {
            (Some(h), _) => h,
            (None, Some(p)) => p.split('-').next().unwrap_or(""),
            _ => continue,
        };
        if let Ok(n) = u64::from_str_radix(hex, 16) {
            out.push(PackNo(n));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// A pack as a reader sees it: its file, or (a replica's unsealed pack)
/// its consecutive part files. A record never spans two parts, because a
/// part ends where a sync ended, at a record boundary.
pub struct PackReader {
    segments: Vec<(u64, u64, File)>,
    pub whole: bool,
}

impl PackReader {
    pub fn open(dir: &Path, no: PackNo) -> Result<PackReader> {
        let whole = pack_path(dir, no);
        match File::open(&whole) {
            Ok(f) => {
                let len = f.metadata().map_err(Error::io_at(&whole))?.len();
                return Ok(PackReader {
                    segments: vec![(0, len, f)],
                    whole: true,
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::IoAt {
                    path: whole,
                    source: e,
                });
            }
        }
        let prefix = format!("{:016x}-", no.0);
        let mut parts = Vec::new();
        for e in std::fs::read_dir(dir).map_err(Error::io_at(dir))? {
            let name = e.map_err(Error::io_at(dir))?.file_name();
            let name = name.to_string_lossy();
            if let Some(rest) = name.strip_prefix(&prefix)
                && let Some(hex) = rest.strip_suffix(".part")
                && let Ok(start) = u64::from_str_radix(hex, 16)
            {
                parts.push(start);
            }
        }
        parts.sort();
        let mut segments = Vec::new();
        let mut expect = 0;
        for start in parts {
            if start != expect {
                break; // a gap: only the contiguous prefix is usable
            }
            let path = part_path(dir, no, start);
            let f = File::open(&path).map_err(Error::io_at(&path))?;
            let len = f.metadata().map_err(Error::io_at(&path))?.len();
            segments.push((start, len, f));
            expect = start + len;
        }
        if segments.is_empty() {
            return Err(Error::IoAt {
                path: whole,
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        Ok(PackReader {
            segments,
            whole: false,
        })
    }

    /// Bytes of the pack readable here.
    pub fn len(&self) -> u64 {
        self.segments.last().map_or(0, |(s, l, _)| s + l)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        if self.whole {
            // One file, which may still grow (the primary's open pack):
            // check its length now, before allocating for a damaged length.
            let f = &self.segments[0].2;
            if offset.saturating_add(len as u64) > f.metadata()?.len() {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
            }
            return read_at(f, offset, len);
        }
        let i = self.segments.partition_point(|(s, _, _)| *s <= offset);
        match i.checked_sub(1).and_then(|i| self.segments.get(i)) {
            Some((start, seg_len, f)) if offset + len as u64 <= start + seg_len => {
                read_at(f, offset - start, len)
            }
            _ => Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
        }
    }

    /// Every well-formed record, in order, up to the end or a torn tail.
    /// Payloads are not hash-checked here.
    pub fn scan(&self) -> Result<Vec<(RecordHeader, u64)>> {
        let head = self
            .read_at(0, PACK_HEADER_LEN as usize)
            .map_err(Error::Io)?;
        format::check_magic(&head, format::PACK_MAGIC, "pack")?;
        let mut out = Vec::new();
        let mut at = PACK_HEADER_LEN;
        let end = self.len();
        while at + RECORD_HEADER_LEN as u64 <= end {
            let Ok(h) = self
                .read_at(at, RECORD_HEADER_LEN)
                .map_err(Error::Io)
                .and_then(|b| RecordHeader::decode(&b))
            else {
                break;
            };
            let payload = at + RECORD_HEADER_LEN as u64;
            if payload + h.stored_len as u64 > end {
                break;
            }
            out.push((h, payload));
            at = payload + h.stored_len as u64;
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
}

struct OpenPack {
    no: PackNo,
    file: File,
    len: u64,
    synced: u64,
}

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
        })
    }

    /// Appends one record; returns (pack, offset of the payload).
    pub fn append(&mut self, header: &RecordHeader, payload: &[u8]) -> Result<(PackNo, u64)> {
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
            file.write_all_at(&format::pack_header(), 0)
                .map_err(Error::io_at(&path))?;
            self.next_no = PackNo(no.0 + 1);
            self.unsynced_dir = true;
            self.open = Some(OpenPack {
                no,
                file,
                len: PACK_HEADER_LEN,
                synced: 0,
            });
        }
        let p = self.open.as_mut().expect("opened above");
        let mut rec = Vec::with_capacity(RECORD_HEADER_LEN + payload.len());
        rec.extend_from_slice(&header.encode());
        rec.extend_from_slice(payload);
        let at = p.len;
        p.file
            .write_all_at(&rec, at)
            .map_err(Error::io_at(pack_path(&self.dir, p.no)))?;
        p.len += rec.len() as u64;
        Ok((p.no, at + RECORD_HEADER_LEN as u64))
    }

    /// Makes every appended record durable: fdatasync of the open pack, and
    /// an fsync of the pack directory when a pack file was created.
    pub fn sync(&mut self) -> Result<()> {
        if let Some(p) = self.open.as_mut()
            && p.synced < p.len
        {
            p.file
                .sync_data()
                .map_err(Error::io_at(pack_path(&self.dir, p.no)))?;
            p.synced = p.len;
        }
        if self.unsynced_dir {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(Error::io_at(&self.dir))?;
            self.unsynced_dir = false;
        }
        Ok(())
    }

    /// The open pack and how many of its bytes are durable (a record
    /// boundary); every other pack in the directory is sealed.
    pub fn open_pack(&self) -> Option<(PackNo, u64)> {
        self.open.as_ref().map(|p| (p.no, p.synced))
    }

    /// Syncs and closes the open pack; it never changes again.
    pub fn seal(&mut self) -> Result<()> {
        self.sync()?;
        self.open = None;
        Ok(())
    }
}

/// Reads `len` bytes at `offset` of a pack file.
pub fn read_at(file: &File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}
