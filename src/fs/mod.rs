//! The FUSE adapter (fuser 0.18): translates kernel requests into engine
//! calls and engine errors into errnos. No storage logic lives here.

use crate::engine::{Attr, Engine, SetAttr, Space};
use crate::error::Error;
use crate::format::{FileType as Ft, Time};
use crate::ids::Ino;
use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How long the kernel may cache attributes and entries. Every change goes
/// through this mount, so the kernel's view cannot go stale behind its back.
const TTL: Duration = Duration::from_secs(1);

/// Files keep their page cache across opens: every change of content goes
/// through the kernel (which keeps its pages right), except a `revfs
/// restore`, which tells the kernel to drop the pages of what it changed;
/// history files never change.
const KEEP_CACHE: FopenFlags = FopenFlags::FOPEN_KEEP_CACHE;
/// Largest write the kernel sends in one request.
const MAX_WRITE: u32 = 1 << 20;

pub struct RevFs {
    engine: Arc<Engine>,
}

impl RevFs {
    pub fn new(engine: Arc<Engine>) -> RevFs {
        RevFs { engine }
    }
}

fn errno(e: Error) -> Errno {
    let n = e.errno();
    if n == libc::EIO {
        tracing::error!("EIO: {e}");
    } else {
        tracing::debug!("errno {n}: {e}");
    }
    Errno::from_i32(n)
}

fn kind(k: Ft) -> FileType {
    match k {
        Ft::Regular => FileType::RegularFile,
        Ft::Directory => FileType::Directory,
        Ft::Symlink => FileType::Symlink,
        Ft::Fifo => FileType::NamedPipe,
        Ft::Socket => FileType::Socket,
        Ft::CharDevice => FileType::CharDevice,
        Ft::BlockDevice => FileType::BlockDevice,
    }
}

impl From<&Attr> for FileAttr {
    fn from(a: &Attr) -> FileAttr {
        let n = &a.node;
        FileAttr {
            ino: INodeNo(a.ino.0),
            size: n.size,
            blocks: n.allocated.div_ceil(512),
            atime: n.atime.to_system(),
            mtime: n.mtime.to_system(),
            ctime: n.ctime.to_system(),
            crtime: n.ctime.to_system(),
            kind: kind(n.kind),
            perm: n.perm,
            nlink: n.nlink,
            uid: n.uid,
            gid: n.gid,
            rdev: n.rdev,
            blksize: 4096,
            flags: 0,
        }
    }
}

fn time_of(t: TimeOrNow) -> Time {
    match t {
        TimeOrNow::Now => Time::now(),
        TimeOrNow::SpecificTime(s) => Time::from_system(s),
    }
}

impl RevFs {
    /// Replies with an entry; the kernel now holds the inode (see `forget`).
    fn entry(&self, reply: ReplyEntry, r: crate::Result<Attr>) {
        match r {
            Ok(a) => {
                self.engine.remember(a.ino);
                reply.entry(&TTL, &FileAttr::from(&a), Generation(0))
            }
            Err(e) => reply.error(errno(e)),
        }
    }
}

fn empty(reply: ReplyEmpty, r: crate::Result<()>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}

impl Filesystem for RevFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_WRITE);
        let _ = config.set_max_readahead(MAX_WRITE);
        let _ = config.add_capabilities(
            InitFlags::FUSE_BIG_WRITES
                | InitFlags::FUSE_MAX_PAGES
                | InitFlags::FUSE_ATOMIC_O_TRUNC
                // Entries with their attributes in every reply: one round
                // trip a batch instead of a LOOKUP a name for `ls -l`, `du`,
                // `find -size`. Not READDIRPLUS_AUTO: it asks for attributes
                // only in a directory's first batch, and `du` of 20,000
                // files then made 16,000 LOOKUPs (0.67 s against 0.43 s on
                // the disk).
                | InitFlags::FUSE_DO_READDIRPLUS
                // ACLs enforced by the kernel from the xattrs revfs keeps;
                // the umask left to revfs, which ignores it where a default
                // ACL is inherited (`engine::acl`).
                | InitFlags::FUSE_POSIX_ACL
                | InitFlags::FUSE_DONT_MASK,
        );
        // Not FUSE_WRITEBACK_CACHE: measured on 12-06 (README, Benchmarks)
        // it made 4 KiB writes 1.74x faster but 1 MiB writes 0.43x (the
        // kernel flushes pages out of order, which folds a file's stream
        // into the staged path) and creates 0.83x (a SETATTR more a file).
        Ok(())
    }

    fn destroy(&mut self) {
        if let Err(e) = self.engine.shutdown() {
            tracing::error!("flush at unmount failed: {e}");
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.engine.lookup(Ino(parent.0), name.as_bytes()) {
            // A name missing from the live tree stays missing until it is
            // made through this mount (or by a restore, which tells the
            // kernel): the kernel may remember that for TTL (node 0), and a
            // create does not ask first. History names come and go with
            // commits, so their misses are not cached.
            Err(Error::NotFound) if Space::of(Ino(parent.0)) == Space::Live => {
                let none = Attr {
                    ino: Ino(0),
                    node: crate::format::Node::new(Ft::Regular, 0, 0, 0),
                };
                reply.entry(&TTL, &FileAttr::from(&none), Generation(0))
            }
            r => self.entry(reply, r),
        }
    }

    /// (fuser's default `batch_forget` calls this for each inode.)
    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.engine.forget(Ino(ino.0), nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.engine.getattr(Ino(ino.0)) {
            Ok(a) => reply.attr(&TTL, &FileAttr::from(&a)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<std::time::SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let s = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time_of),
            mtime: mtime.map(time_of),
            ctime: ctime.map(Time::from_system),
            fh: fh.map(|f| f.0),
        };
        match self.engine.setattr(Ino(ino.0), &s) {
            Ok(a) => reply.attr(&TTL, &FileAttr::from(&a)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.engine.readlink(Ino(ino.0)) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let Some(k) = Ft::from_mode(mode).filter(|k| *k != Ft::Directory && *k != Ft::Symlink)
        else {
            return reply.error(Errno::from_i32(libc::EINVAL));
        };
        self.entry(
            reply,
            self.engine.create_node_umask(
                Ino(parent.0),
                name.as_bytes(),
                k,
                mode,
                umask,
                rdev,
                req.uid(),
                req.gid(),
                b"",
            ),
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        self.entry(
            reply,
            self.engine.create_node_umask(
                Ino(parent.0),
                name.as_bytes(),
                Ft::Directory,
                mode,
                umask,
                0,
                req.uid(),
                req.gid(),
                b"",
            ),
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(
            reply,
            self.engine.remove(Ino(parent.0), name.as_bytes(), false),
        );
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(
            reply,
            self.engine.remove(Ino(parent.0), name.as_bytes(), true),
        );
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        self.entry(
            reply,
            self.engine.create_node(
                Ino(parent.0),
                link_name.as_bytes(),
                Ft::Symlink,
                0o777,
                0,
                req.uid(),
                req.gid(),
                target.as_os_str().as_bytes(),
            ),
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        empty(
            reply,
            self.engine.rename(
                Ino(parent.0),
                name.as_bytes(),
                Ino(newparent.0),
                newname.as_bytes(),
                flags.bits(),
            ),
        );
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.entry(
            reply,
            self.engine
                .link(Ino(ino.0), Ino(newparent.0), newname.as_bytes()),
        );
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let write = flags.0 & libc::O_ACCMODE != libc::O_RDONLY;
        let trunc = flags.0 & libc::O_TRUNC != 0;
        match self.engine.open_by(Ino(ino.0), write, trunc, req.pid()) {
            Ok(fh) => reply.opened(FileHandle(fh), KEEP_CACHE),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.engine.read(fh.0, offset, size) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.engine.write(fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.engine.flush_by(fh.0, req.pid()));
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.engine.release(fh.0));
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.engine.fsync(fh.0));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.engine.opendir(Ino(ino.0)) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.engine.readdir(fh.0, offset) {
            Ok(e) => e,
            Err(e) => return reply.error(errno(e)),
        };
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(
                INodeNo(e.ino.0),
                (i + 1) as u64,
                kind(e.kind),
                OsStr::from_bytes(&e.name),
            ) {
                break;
            }
        }
        reply.ok();
    }

    /// Like `readdir`, each entry with its attributes. The kernel counts
    /// every entry but "." and ".." as a lookup (it will FORGET it), so
    /// each one added is remembered as `lookup` does, and only once it is
    /// in the reply.
    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: fuser::ReplyDirectoryPlus,
    ) {
        let entries = match self.engine.readdir(fh.0, offset) {
            Ok(e) => e,
            Err(e) => return reply.error(errno(e)),
        };
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            let dots = e.name == b"." || e.name == b"..";
            let attr = if dots {
                self.engine.getattr(e.ino)
            } else {
                self.engine.listed_attr(fh.0, Ino(ino.0), e)
            };
            // Gone since the listing was taken: left out, as ext4 would.
            let Ok(a) = attr else { continue };
            if reply.add(
                INodeNo(a.ino.0),
                (i + 1) as u64,
                OsStr::from_bytes(&e.name),
                &TTL,
                &FileAttr::from(&a),
                Generation(0),
            ) {
                break;
            }
            if !dots {
                self.engine.remember(a.ino);
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.engine.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.engine.commit(true).map(|_| ()));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.engine.statfs() {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, 255, s.bsize,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        empty(
            reply,
            self.engine
                .setxattr(Ino(ino.0), name.as_bytes(), value, flags),
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        xattr_reply(
            reply,
            size,
            self.engine.getxattr(Ino(ino.0), name.as_bytes()),
        );
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        xattr_reply(reply, size, self.engine.listxattr(Ino(ino.0)));
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.engine.removexattr(Ino(ino.0), name.as_bytes()));
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Permission checks are the kernel's (default_permissions).
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let r = self
            .engine
            .create_node_umask(
                Ino(parent.0),
                name.as_bytes(),
                Ft::Regular,
                mode,
                umask,
                0,
                req.uid(),
                req.gid(),
                b"",
            )
            .and_then(|a| {
                let write = flags & libc::O_ACCMODE != libc::O_RDONLY;
                Ok((self.engine.open_by(a.ino, write, false, req.pid())?, a))
            });
        match r {
            Ok((fh, a)) => {
                self.engine.remember(a.ino);
                reply.created(
                    &TTL,
                    &FileAttr::from(&a),
                    Generation(0),
                    FileHandle(fh),
                    KEEP_CACHE,
                )
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.engine.fallocate(fh.0, offset, length, mode));
    }
}

fn xattr_reply(reply: ReplyXattr, size: u32, r: crate::Result<Vec<u8>>) {
    match r {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(Errno::from_i32(libc::ERANGE)),
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(errno(e)),
    }
}
