//! Namespace operations of the live tree: lookup, create, link, unlink,
//! rename, attributes, xattrs, directory listing. Each is one atomic
//! catalog batch under the namespace lock, and marks the directories whose
//! next tree changes.

use super::acl;
use super::file::FileState;
use super::snapshots::{SNAP_ROOT, SNAPSHOTS_NAME, Space};
use super::{Attr, Engine, Handle, lock};
use crate::catalog::db::{Batch, Dentry, Inode, Parents};
use crate::error::{Error, Result};
use crate::format::{FileType, Node, Time};
use crate::ids::Ino;
use std::sync::{Arc, RwLock};

const NAME_MAX: usize = 255;
const XATTR_NAME_MAX: usize = 255;
const XATTR_SIZE_MAX: usize = 65536;
const LINK_MAX: u32 = 65000;

/// One entry of a directory listing.
#[derive(Clone, Debug)]
pub struct DirEntry {
    pub ino: Ino,
    pub kind: FileType,
    pub name: Vec<u8>,
}

/// Changes asked of setattr; `None` leaves a field alone.
#[derive(Clone, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<Time>,
    pub mtime: Option<Time>,
    pub ctime: Option<Time>,
    pub fh: Option<u64>,
}

/// Space figures of the filesystem that holds the store.
#[derive(Clone, Debug)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
}

fn check_name(name: &[u8]) -> Result<()> {
    if name.len() > NAME_MAX {
        return Err(Error::NameTooLong);
    }
    if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
        return Err(Error::Invalid);
    }
    Ok(())
}

impl Engine {
    pub fn lookup(&self, parent: Ino, name: &[u8]) -> Result<Attr> {
        if name.len() > NAME_MAX {
            return Err(Error::NameTooLong);
        }
        if Space::of(parent) == Space::History {
            return self.snap_lookup(parent, name);
        }
        if parent == Ino::ROOT && name == SNAPSHOTS_NAME {
            return self.snap_getattr(SNAP_ROOT);
        }
        let dir = self.inode(parent)?;
        if dir.node.kind != FileType::Directory {
            return Err(Error::NotDir);
        }
        let d = self.db.dentry(parent, name)?.ok_or(Error::NotFound)?;
        self.entry_attr(d.ino, d.kind, name)
    }

    /// The attributes of `ino`, found as `name` in a live directory (a
    /// regular file's name may make it a checkpoint marker).
    fn entry_attr(&self, ino: Ino, kind: FileType, name: &[u8]) -> Result<Attr> {
        if kind == FileType::Regular {
            self.note_name(ino, name, false);
        }
        self.getattr(ino)
    }

    fn dir_inode(&self, parent: Ino) -> Result<Inode> {
        let dir = self.inode(parent)?;
        if dir.node.kind != FileType::Directory {
            return Err(Error::NotDir);
        }
        if dir.node.nlink == 0 {
            // Removed directory: nothing may be created in it.
            return Err(Error::NotFound);
        }
        Ok(dir)
    }

    /// Creates a node of any type (regular, dir, symlink, fifo, socket, device).
    #[allow(clippy::too_many_arguments)]
    pub fn create_node(
        &self,
        parent: Ino,
        name: &[u8],
        kind: FileType,
        mode: u32,
        rdev: u32,
        uid: u32,
        gid: u32,
        target: &[u8],
    ) -> Result<Attr> {
        self.create_node_umask(parent, name, kind, mode, 0, rdev, uid, gid, target)
    }

    /// `create_node` as the kernel asks it: `mode` with `umask` not applied
    /// yet. In a directory with a default ACL the umask does not count: the
    /// node inherits that ACL, masked by `mode` (`acl`).
    #[allow(clippy::too_many_arguments)]
    pub fn create_node_umask(
        &self,
        parent: Ino,
        name: &[u8],
        kind: FileType,
        mode: u32,
        umask: u32,
        rdev: u32,
        uid: u32,
        gid: u32,
        target: &[u8],
    ) -> Result<Attr> {
        if Space::of(parent) == Space::History {
            return match kind {
                FileType::Directory => self.snap_mkdir(parent, name),
                _ => Err(Error::ReadOnly),
            };
        }
        self.check_writable()?;
        check_name(name)?;
        reserved(parent, name)?;
        let _ns = lock(&self.ns);
        let mut dir = self.dir_inode(parent)?;
        if self.db.dentry(parent, name)?.is_some() {
            return Err(Error::Exists);
        }
        let inherited = match dir.node.xattrs.get(acl::DEFAULT) {
            Some(b) if kind != FileType::Symlink => Some(acl::Acl::parse(b)?),
            _ => None,
        };
        let mut perm = match inherited {
            Some(_) => mode & 0o7777,
            None => mode & 0o7777 & !umask,
        } as u16;
        let mut gid = gid;
        // setgid directories pass their group on, and their setgid bit to subdirectories.
        if dir.node.perm & libc::S_ISGID as u16 != 0 {
            gid = dir.node.gid;
            if kind == FileType::Directory {
                perm |= libc::S_ISGID as u16;
            }
        }
        if kind == FileType::Symlink {
            perm = 0o777;
        }
        let mut node = Node::new(kind, perm, uid, gid);
        if let Some(default) = inherited {
            let mut access = default.clone();
            node.perm = access.create_masq(node.perm);
            if !access.is_minimal() {
                node.xattrs.insert(acl::ACCESS.to_vec(), access.encode());
            }
            if kind == FileType::Directory {
                node.xattrs.insert(acl::DEFAULT.to_vec(), default.encode());
            }
        }
        node.rdev = rdev;
        if kind == FileType::Symlink {
            node.target = target.to_vec();
            node.size = target.len() as u64;
        }
        let mut b = Batch::default();
        let ino = self.alloc_ino(&mut b);
        let inode = Inode {
            node,
            parents: Parents::one(parent),
        };
        b.put_inode(ino, &inode);
        b.put_dentry(parent, name, Dentry { ino, kind });
        let now = inode.node.ctime;
        dir.node.mtime = now;
        dir.node.ctime = now;
        if kind == FileType::Directory {
            b.mark_dirty(ino);
            dir.node.nlink += 1;
        }
        self.put_inode(&mut b, parent, &dir);
        b.mark_dirty(parent);
        Engine::touch_parents(&mut b, &dir);
        self.db.apply(b)?;
        if kind == FileType::Regular {
            self.note_name(ino, name, true);
        }
        Ok(Attr {
            ino,
            node: inode.node,
        })
    }

    pub fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        let node = self.getattr(ino)?.node;
        if node.kind != FileType::Symlink {
            return Err(Error::Invalid);
        }
        Ok(node.target)
    }

    pub fn link(&self, ino: Ino, parent: Ino, name: &[u8]) -> Result<Attr> {
        if Space::of(ino) == Space::History || Space::of(parent) == Space::History {
            return Err(Error::ReadOnly);
        }
        self.check_writable()?;
        check_name(name)?;
        reserved(parent, name)?;
        let _ns = lock(&self.ns);
        let mut dir = self.dir_inode(parent)?;
        let mut inode = self.inode(ino)?;
        if inode.node.kind == FileType::Directory {
            return Err(Error::NotPermitted);
        }
        if inode.node.nlink >= LINK_MAX {
            return Err(Error::TooManyLinks);
        }
        if self.db.dentry(parent, name)?.is_some() {
            return Err(Error::Exists);
        }
        let now = Time::now();
        let mut b = Batch::default();
        b.put_dentry(
            parent,
            name,
            Dentry {
                ino,
                kind: inode.node.kind,
            },
        );
        inode.node.nlink += 1;
        inode.node.ctime = now;
        inode.parents.push(parent);
        self.put_inode(&mut b, ino, &inode);
        Engine::touch_parents(&mut b, &inode);
        dir.node.mtime = now;
        dir.node.ctime = now;
        self.put_inode(&mut b, parent, &dir);
        Engine::touch_parents(&mut b, &dir);
        b.del_orphan(ino);
        self.db.apply(b)?;
        self.getattr(ino)
    }

    /// unlink(2) (`dir` false) or rmdir(2) (`dir` true).
    pub fn remove(&self, parent: Ino, name: &[u8], dir: bool) -> Result<()> {
        if Space::of(parent) == Space::History {
            return if dir {
                self.snap_rmdir(parent, name)
            } else {
                Err(Error::ReadOnly)
            };
        }
        if parent == Ino::ROOT && name == SNAPSHOTS_NAME {
            return Err(Error::ReadOnly);
        }
        self.check_writable()?;
        if name.len() > NAME_MAX {
            return Err(Error::NameTooLong);
        }
        self.commit_before_replacing(parent, name)?;
        let _ns = lock(&self.ns);
        let mut pdir = self.dir_inode(parent)?;
        let d = self.db.dentry(parent, name)?.ok_or(Error::NotFound)?;
        let mut b = Batch::default();
        match (dir, d.kind == FileType::Directory) {
            (false, true) => return Err(Error::IsDir),
            (true, false) => return Err(Error::NotDir),
            (true, true) => {
                if !self.db.dir_is_empty(d.ino)? {
                    return Err(Error::NotEmpty);
                }
                pdir.node.nlink = pdir.node.nlink.saturating_sub(1);
            }
            (false, false) => {}
        }
        let now = Time::now();
        b.del_dentry(parent, name);
        self.unlink_inode(&mut b, d.ino, parent, now)?;
        pdir.node.mtime = now;
        pdir.node.ctime = now;
        self.put_inode(&mut b, parent, &pdir);
        b.mark_dirty(parent);
        Engine::touch_parents(&mut b, &pdir);
        self.db.apply(b)
    }

    /// Makes a commit first when the file at `parent/name` is about to
    /// lose that path (unlink, rename over it) while it holds a recorded
    /// version that no commit has yet and that may not be merged away:
    /// otherwise no commit would ever show that version at its path.
    fn commit_before_replacing(&self, parent: Ino, name: &[u8]) -> Result<()> {
        let Some(d) = self.db.dentry(parent, name)? else {
            return Ok(());
        };
        if d.kind != FileType::Regular {
            return Ok(());
        }
        let now = Time::now();
        let must = {
            let p = lock(&self.pending);
            let placed = p.placed.get(&(parent, name.to_vec())).map(|t| (*t, false));
            let recorded = p
                .versions
                .iter()
                .rev()
                .find(|(i, _, _)| *i == d.ino)
                .map(|(_, _, v)| (v.time, v.fsynced));
            // The path's state since the last commit: placed there, or
            // recorded, whichever is newer; fsynced is never merged.
            match (placed, recorded) {
                (None, None) => false,
                (a, b) => {
                    let fsynced = b.is_some_and(|v| v.1);
                    let since = a.into_iter().chain(b).map(|v| v.0).max().unwrap_or(now);
                    fsynced
                        || (now.as_nanos() - since.as_nanos())
                            >= self.opts.min_version_interval.as_nanos() as i128
                }
            }
        };
        if must {
            self.commit(false)?;
        }
        Ok(())
    }

    /// Drops one link of `ino` from `parent`; deletes the inode when no
    /// link and no open handle is left.
    fn unlink_inode(&self, b: &mut Batch, ino: Ino, parent: Ino, now: Time) -> Result<()> {
        let mut inode = self.inode(ino)?;
        inode.parents.remove_one(parent);
        inode.node.ctime = now;
        if inode.node.kind == FileType::Directory {
            inode.node.nlink = 0;
        } else {
            inode.node.nlink = inode.node.nlink.saturating_sub(1);
        }
        Engine::touch_parents(b, &inode);
        if inode.node.nlink > 0 {
            self.put_inode(b, ino, &inode);
        } else if self.in_use(ino) {
            self.put_inode(b, ino, &inode);
            b.put_orphan(ino);
        } else {
            b.del_inode(ino);
            b.clear_dirty(ino);
            lock(&self.pending).content.remove(&ino);
        }
        Ok(())
    }

    /// Deletes an inode whose last link went while it was open.
    pub(super) fn drop_if_unlinked(&self, ino: Ino) -> Result<()> {
        let _ns = lock(&self.ns);
        if self.in_use(ino) {
            return Ok(());
        }
        match self.db.inode(ino)? {
            Some(i) if i.node.nlink == 0 => {
                let mut b = Batch::default();
                b.del_inode(ino);
                b.del_orphan(ino);
                self.db.apply(b)?;
                lock(&self.pending).content.remove(&ino);
            }
            _ => {}
        }
        Ok(())
    }

    /// rename(2) with RENAME_NOREPLACE / RENAME_EXCHANGE flags.
    pub fn rename(
        &self,
        parent: Ino,
        name: &[u8],
        newparent: Ino,
        newname: &[u8],
        flags: u32,
    ) -> Result<()> {
        if Space::of(parent) == Space::History || Space::of(newparent) == Space::History {
            return Err(Error::ReadOnly);
        }
        if (parent == Ino::ROOT && name == SNAPSHOTS_NAME)
            || (newparent == Ino::ROOT && newname == SNAPSHOTS_NAME)
        {
            return Err(Error::ReadOnly);
        }
        self.check_writable()?;
        check_name(newname)?;
        if name.len() > NAME_MAX {
            return Err(Error::NameTooLong);
        }
        let noreplace = flags & libc::RENAME_NOREPLACE != 0;
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        if flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) != 0 || (noreplace && exchange)
        {
            return Err(Error::Invalid);
        }
        if !noreplace {
            self.commit_before_replacing(newparent, newname)?;
        }
        if exchange {
            self.commit_before_replacing(parent, name)?;
        }
        let ns = lock(&self.ns);
        self.dir_inode(parent)?;
        self.dir_inode(newparent)?;
        let src = self.db.dentry(parent, name)?.ok_or(Error::NotFound)?;
        let dst = self.db.dentry(newparent, newname)?;
        if dst.is_some_and(|d| d.ino == src.ino) {
            // Same inode (a hard link or the same name): POSIX says do nothing.
            return Ok(());
        }
        if src.kind == FileType::Directory
            && newparent != parent
            && self.is_ancestor(src.ino, newparent)?
        {
            return Err(Error::Invalid);
        }
        let now = Time::now();
        let mut b = Batch::default();
        let mut dir_delta: i64 = 0; // directories moving from parent to newparent
        match (dst, exchange) {
            (None, true) => return Err(Error::NotFound),
            (Some(_), false) if noreplace => return Err(Error::Exists),
            (Some(d), true) => {
                if d.kind == FileType::Directory
                    && parent != newparent
                    && self.is_ancestor(d.ino, parent)?
                {
                    return Err(Error::Invalid);
                }
                b.put_dentry(parent, name, d);
                b.put_dentry(newparent, newname, src);
                self.reparent(&mut b, d.ino, newparent, parent, now)?;
                dir_delta -= (d.kind == FileType::Directory) as i64;
            }
            (Some(d), false) => {
                match (
                    src.kind == FileType::Directory,
                    d.kind == FileType::Directory,
                ) {
                    (true, false) => return Err(Error::NotDir),
                    (false, true) => return Err(Error::IsDir),
                    (true, true) => {
                        if !self.db.dir_is_empty(d.ino)? {
                            return Err(Error::NotEmpty);
                        }
                        // The replaced directory's ".." link to newparent goes away.
                        let mut np = self.inode(newparent)?;
                        np.node.nlink = np.node.nlink.saturating_sub(1);
                        self.put_inode(&mut b, newparent, &np);
                    }
                    (false, false) => {}
                }
                b.del_dentry(parent, name);
                b.put_dentry(newparent, newname, src);
                self.unlink_inode(&mut b, d.ino, newparent, now)?;
            }
            (None, false) => {
                b.del_dentry(parent, name);
                b.put_dentry(newparent, newname, src);
            }
        }
        self.reparent(&mut b, src.ino, parent, newparent, now)?;
        dir_delta += (src.kind == FileType::Directory) as i64;
        self.db.apply(std::mem::take(&mut b))?;
        {
            let mut p = lock(&self.pending);
            p.placed.insert((newparent, newname.to_vec()), now);
            if exchange {
                p.placed.insert((parent, name.to_vec()), now);
            }
        }
        // Directory times and link counts, read after the batch so that a
        // change made above to the same inode is not lost.
        let mut b = Batch::default();
        let changes = if parent == newparent {
            vec![(parent, 0)]
        } else {
            vec![(parent, -dir_delta), (newparent, dir_delta)]
        };
        for (dir, delta) in changes {
            let mut d = self.inode(dir)?;
            d.node.mtime = now;
            d.node.ctime = now;
            d.node.nlink = (d.node.nlink as i64 + delta).max(2) as u32;
            self.put_inode(&mut b, dir, &d);
            b.mark_dirty(dir);
            Engine::touch_parents(&mut b, &d);
        }
        self.db.apply(b)?;
        drop(ns);
        // A file or directory renamed into place may complete a checkpoint.
        let placed = match src.kind {
            FileType::Directory => true,
            FileType::Regular => {
                self.note_name(src.ino, newname, false);
                self.is_watched(src.ino)
            }
            _ => false,
        };
        if placed {
            self.checkpoint_event(src.ino, super::checkpoints::Event::Renamed(name));
        }
        Ok(())
    }

    /// Moves one link of `ino` from directory `from` to `to`.
    fn reparent(&self, b: &mut Batch, ino: Ino, from: Ino, to: Ino, now: Time) -> Result<()> {
        let mut inode = self.inode(ino)?;
        inode.parents.moved(from, to);
        inode.node.ctime = now;
        self.put_inode(b, ino, &inode);
        Ok(())
    }

    /// Whether directory `a` is `b` or one of its ancestors.
    fn is_ancestor(&self, a: Ino, mut b: Ino) -> Result<bool> {
        for _ in 0..4096 {
            if a == b {
                return Ok(true);
            }
            if b == Ino::ROOT {
                return Ok(false);
            }
            b = *self.inode(b)?.parents.first().ok_or(Error::NotFound)?;
        }
        Ok(false)
    }

    pub fn setattr(&self, ino: Ino, s: &SetAttr) -> Result<Attr> {
        if Space::of(ino) == Space::History {
            return Err(Error::ReadOnly);
        }
        self.check_writable()?;
        if let Some(size) = s.size {
            self.truncate(ino, size)?;
        }
        if let (Some(_), Some(f)) = (s.mtime, self.open_file(ino)) {
            // An explicit time (touch, cp -p) wins over the last write's.
            f.write().unwrap_or_else(|e| e.into_inner()).mtime = None;
        }
        let _ns = lock(&self.ns);
        let mut inode = self.inode(ino)?;
        let now = Time::now();
        let n = &mut inode.node;
        if let Some(mode) = s.mode {
            n.perm = (mode & 0o7777) as u16;
            // The access ACL follows the mode (its owner, mask, other).
            if let Some(b) = n.xattrs.get(acl::ACCESS) {
                let mut a = acl::Acl::parse(b)?;
                a.chmod(n.perm);
                n.xattrs.insert(acl::ACCESS.to_vec(), a.encode());
            }
        }
        if let Some(uid) = s.uid {
            n.uid = uid;
        }
        if let Some(gid) = s.gid {
            n.gid = gid;
        }
        if (s.uid.is_some() || s.gid.is_some()) && s.mode.is_none() && n.kind != FileType::Directory
        {
            // chown clears setuid, and setgid when group-executable (as ext4).
            n.perm &= !(libc::S_ISUID as u16);
            if n.perm & 0o010 != 0 {
                n.perm &= !(libc::S_ISGID as u16);
            }
        }
        if let Some(t) = s.atime {
            n.atime = t;
        }
        if let Some(t) = s.mtime {
            n.mtime = t;
        }
        n.ctime = s.ctime.unwrap_or(now);
        let mut b = Batch::default();
        self.put_inode(&mut b, ino, &inode);
        Engine::touch_parents(&mut b, &inode);
        self.db.apply(b)?;
        drop(_ns);
        self.getattr(ino)
    }

    fn truncate(&self, ino: Ino, size: u64) -> Result<()> {
        if size > i64::MAX as u64 {
            return Err(Error::TooBig);
        }
        let inode = self.inode(ino)?;
        match inode.node.kind {
            FileType::Regular => {}
            FileType::Directory => return Err(Error::IsDir),
            _ => return Err(Error::Invalid),
        }
        // Use the open state if any; otherwise a temporary one, recorded now.
        match self.open_file(ino) {
            Some(f) => f
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .truncate(&self.store, size)?,
            None => {
                let m = self.load_manifest(inode.node.content)?;
                let f = RwLock::new(FileState::new(m));
                f.write()
                    .unwrap_or_else(|e| e.into_inner())
                    .truncate(&self.store, size)?;
                self.record(ino, &f, false)?;
            }
        }
        Ok(())
    }

    /// fallocate(2). Mode 0 (and KEEP_SIZE) extends the size; allocation
    /// itself is lazy. PUNCH_HOLE (with KEEP_SIZE, as the kernel demands)
    /// and ZERO_RANGE make the range read as zeros and store it as a hole
    /// extent in the next version, so it costs nothing; ZERO_RANGE without
    /// KEEP_SIZE also extends the size. COLLAPSE_RANGE and INSERT_RANGE
    /// never reach a FUSE daemon (the kernel answers EOPNOTSUPP itself).
    pub fn fallocate(&self, fh: u64, offset: u64, len: u64, mode: i32) -> Result<()> {
        use libc::{
            FALLOC_FL_KEEP_SIZE as KEEP, FALLOC_FL_PUNCH_HOLE as PUNCH,
            FALLOC_FL_ZERO_RANGE as ZERO,
        };
        self.check_writable()?;
        if mode & !(KEEP | PUNCH | ZERO) != 0
            || (mode & PUNCH != 0 && (mode & KEEP == 0 || mode & ZERO != 0))
        {
            return Err(Error::NotSupported);
        }
        if len == 0 {
            return Err(Error::Invalid);
        }
        let end = offset.checked_add(len).ok_or(Error::TooBig)?;
        let (ino, f) = self.handle_file(fh)?;
        if Space::of(ino) == Space::History {
            return Err(Error::ReadOnly);
        }
        let mut st = f.write().unwrap_or_else(|e| e.into_inner());
        if mode & KEEP == 0 && end > st.size {
            st.truncate(&self.store, end)?;
        }
        if mode & (PUNCH | ZERO) != 0 {
            st.zero(&self.store, offset, end)?;
        }
        Ok(())
    }

    // ----------------------------------------------------------- xattrs ---

    pub fn getxattr(&self, ino: Ino, name: &[u8]) -> Result<Vec<u8>> {
        check_xattr_name(name)?;
        self.getattr(ino)?
            .node
            .xattrs
            .get(name)
            .cloned()
            .ok_or(Error::NoAttr)
    }

    pub fn listxattr(&self, ino: Ino) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for k in self.getattr(ino)?.node.xattrs.keys() {
            out.extend_from_slice(k);
            out.push(0);
        }
        Ok(out)
    }

    pub fn setxattr(&self, ino: Ino, name: &[u8], value: &[u8], flags: i32) -> Result<()> {
        if Space::of(ino) == Space::History {
            return Err(Error::ReadOnly);
        }
        self.check_writable()?;
        check_xattr_name(name)?;
        if value.len() > XATTR_SIZE_MAX {
            return Err(Error::TooBig);
        }
        if name == acl::ACCESS || name == acl::DEFAULT {
            return self.set_acl(ino, name, value);
        }
        self.change_xattrs(ino, |x| {
            let exists = x.contains_key(name);
            if flags & libc::XATTR_CREATE != 0 && exists {
                return Err(Error::Exists);
            }
            if flags & libc::XATTR_REPLACE != 0 && !exists {
                return Err(Error::NoAttr);
            }
            x.insert(name.to_vec(), value.to_vec());
            Ok(())
        })
    }

    pub fn removexattr(&self, ino: Ino, name: &[u8]) -> Result<()> {
        if Space::of(ino) == Space::History {
            return Err(Error::ReadOnly);
        }
        self.check_writable()?;
        check_xattr_name(name)?;
        self.change_xattrs(ino, |x| x.remove(name).map(|_| ()).ok_or(Error::NoAttr))
    }

    /// setfacl: an access ACL also sets the mode's permission bits (and one
    /// that says no more than they do is not kept); a default ACL is a
    /// directory's only.
    fn set_acl(&self, ino: Ino, name: &[u8], value: &[u8]) -> Result<()> {
        let a = acl::Acl::parse(value)?;
        self.change_node(ino, |n| {
            if name == acl::DEFAULT {
                if n.kind != FileType::Directory {
                    return Err(Error::Access);
                }
                n.xattrs.insert(name.to_vec(), a.encode());
                return Ok(());
            }
            n.perm = (n.perm & !0o777) | a.mode_bits();
            if a.is_minimal() {
                n.xattrs.remove(name);
            } else {
                n.xattrs.insert(name.to_vec(), a.encode());
            }
            Ok(())
        })
    }

    fn change_xattrs(
        &self,
        ino: Ino,
        f: impl FnOnce(&mut std::collections::BTreeMap<Vec<u8>, Vec<u8>>) -> Result<()>,
    ) -> Result<()> {
        self.change_node(ino, |n| f(&mut n.xattrs))
    }

    fn change_node(&self, ino: Ino, f: impl FnOnce(&mut Node) -> Result<()>) -> Result<()> {
        let _ns = lock(&self.ns);
        let mut inode = self.inode(ino)?;
        f(&mut inode.node)?;
        inode.node.ctime = Time::now();
        let mut b = Batch::default();
        self.put_inode(&mut b, ino, &inode);
        Engine::touch_parents(&mut b, &inode);
        self.db.apply(b)
    }

    // ------------------------------------------------------ directories ---

    /// Opens a directory. A listing is taken at offset 0 and kept in the
    /// handle, so that offsets stay valid while the directory changes.
    pub fn opendir(&self, ino: Ino) -> Result<u64> {
        if self.getattr(ino)?.node.kind != FileType::Directory {
            return Err(Error::NotDir);
        }
        // The listing is taken by the first readdir (offset 0).
        Ok(self.new_handle(Handle::Dir {
            ino,
            entries: Arc::new(Vec::new()),
            listed_at: u64::MAX,
        }))
    }

    fn list_entries(&self, ino: Ino) -> Result<Vec<DirEntry>> {
        if Space::of(ino) == Space::History {
            return self.snap_list(ino);
        }
        let inode = self.inode(ino)?;
        if inode.node.kind != FileType::Directory {
            return Err(Error::NotDir);
        }
        let parent = inode.parents.first().copied().unwrap_or(Ino::ROOT);
        let mut entries = vec![
            DirEntry {
                ino,
                kind: FileType::Directory,
                name: b".".to_vec(),
            },
            DirEntry {
                ino: parent,
                kind: FileType::Directory,
                name: b"..".to_vec(),
            },
        ];
        for (name, d) in self.db.list_dir(ino)? {
            entries.push(DirEntry {
                ino: d.ino,
                kind: d.kind,
                name,
            });
        }
        Ok(entries)
    }

    /// The listing of an open directory; reading from offset 0 (a new
    /// pass, e.g. after rewinddir) takes a fresh listing.
    pub fn readdir(&self, fh: u64, offset: u64) -> Result<Arc<Vec<DirEntry>>> {
        let ino = match lock(&self.handles).get(&fh) {
            Some(Handle::Dir { entries, .. }) if offset > 0 => return Ok(entries.clone()),
            Some(Handle::Dir { ino, .. }) => *ino,
            _ => return Err(Error::Invalid),
        };
        let changes = self.db.dentry_changes();
        let fresh = Arc::new(self.list_entries(ino)?);
        if let Some(Handle::Dir {
            entries, listed_at, ..
        }) = lock(&self.handles).get_mut(&fh)
        {
            *entries = fresh.clone();
            *listed_at = changes;
        }
        Ok(fresh)
    }

    /// The attributes of an entry of a listing of `parent` taken by
    /// handle `fh` (readdirplus): looked up again by name unless no entry
    /// of the catalog changed since the listing was taken (a `find` or a
    /// `du` then reads one record an entry, not three).
    pub fn listed_attr(&self, fh: u64, parent: Ino, e: &DirEntry) -> Result<Attr> {
        let current = Space::of(parent) == Space::Live
            && matches!(lock(&self.handles).get(&fh),
                Some(Handle::Dir { listed_at, .. }) if *listed_at == self.db.dentry_changes());
        if !current {
            return self.lookup(parent, &e.name);
        }
        self.entry_attr(e.ino, e.kind, &e.name)
    }

    pub fn releasedir(&self, fh: u64) {
        let h = lock(&self.handles).remove(&fh);
        if let Some(Handle::Dir { ino, entries, .. }) = h
            && Space::of(ino) == Space::History
        {
            lock(&self.views).listed(&entries);
        }
    }

    pub fn statfs(&self) -> Result<StatFs> {
        let s = crate::sys::statvfs(self.store.packs_dir()).map_err(Error::Io)?;
        let files = self.inode_count();
        Ok(StatFs {
            blocks: s.f_blocks as u64 * s.f_frsize as u64 / 4096,
            bfree: s.f_bfree as u64 * s.f_frsize as u64 / 4096,
            bavail: s.f_bavail as u64 * s.f_frsize as u64 / 4096,
            files: files + s.f_ffree as u64,
            ffree: s.f_ffree as u64,
            bsize: 4096,
        })
    }
}

/// `.snapshots` in the root belongs to the history view.
fn reserved(parent: Ino, name: &[u8]) -> Result<()> {
    if parent == Ino::ROOT && name == SNAPSHOTS_NAME {
        return Err(Error::Exists);
    }
    Ok(())
}

fn check_xattr_name(name: &[u8]) -> Result<()> {
    if name.is_empty() {
        return Err(Error::Invalid);
    }
    if name.len() > XATTR_NAME_MAX {
        return Err(Error::Range);
    }
    // POSIX ACLs are kept (the kernel enforces them); no other system.
    // attribute is.
    if name.starts_with(b"system.") && name != acl::ACCESS && name != acl::DEFAULT {
        return Err(Error::NotSupported);
    }
    Ok(())
}
