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

/// Numbers of the pack files present in `dir`, sorted.
pub fn list_packs(dir: &Path) -> Result<Vec<PackNo>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(Error::io_at(dir))? {
        let name = e.map_err(Error::io_at(dir))?.file_name();
        let name = name.to_string_lossy();
        if let Some(hex) = name.strip_suffix(".pack")
            && let Ok(n) = u64::from_str_radix(hex, 16)
        {
            out.push(PackNo(n));
        }
    }
    out.sort();
    Ok(out)
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
    dirty: bool,
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
                dirty: true,
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
        p.dirty = true;
        Ok((p.no, at + RECORD_HEADER_LEN as u64))
    }

    /// Makes every appended record durable: fdatasync of the open pack, and
    /// an fsync of the pack directory when a pack file was created.
    pub fn sync(&mut self) -> Result<()> {
        if let Some(p) = self.open.as_mut()
            && p.dirty
        {
            p.file
                .sync_data()
                .map_err(Error::io_at(pack_path(&self.dir, p.no)))?;
            p.dirty = false;
        }
        if self.unsynced_dir {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(Error::io_at(&self.dir))?;
            self.unsynced_dir = false;
        }
        Ok(())
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
