//! The filesystem engine: POSIX semantics of the live tree over the catalog
//! and the object store, usable without any mount (the FUSE adapter only
//! translates to it).
//!
//! Concurrency: namespace changes and commits are serialized by `ns`;
//! file contents have one lock per open file (`files`). Lock order is
//! always file lock, then `ns`, then `pending`, so `record` (which chunks
//! outside `ns`) never deadlocks with a truncate.
//!
//! Recorded content waits in `pending` until the next commit makes its
//! objects durable and publishes it (see `format` for the ordering); the
//! catalog itself only ever points at durable objects.

pub mod acl;
pub mod checkpoints;
mod commit;
pub mod file;
pub mod history;
mod namespace;
mod pool;
mod readahead;
pub mod replica_link;
pub mod restore;
mod roots;
pub mod snapshots;
mod stream;

use crate::catalog::db::{Batch, Db, Inode, Version};
use crate::error::{Error, Result};
use crate::format::{FileType, Node, Time};
use crate::ids::{CommitSeq, Ino, ObjectId};
use crate::manifest::Content;
use crate::store::ObjectStore;
use file::FileState;
pub use replica_link::{ReplicaLink, ReplicaStatus};
pub use snapshots::Space;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub use namespace::{DirEntry, SetAttr, StatFs};
pub use roots::Paused;

/// Tunables of a mounted engine.
#[derive(Clone, Debug)]
pub struct Options {
    /// Versions of one file closer together than this are merged (unless fsync'ed).
    pub min_version_interval: Duration,
    pub read_only: bool,
    /// Which automatic snapshots `ls .snapshots` lists.
    pub thinning: history::Thinning,
    /// fsync returns only once the replica holds the data too.
    pub replica_sync: bool,
    /// The retention policy the store keeps (from its config).
    pub policy: crate::retention::Policy,
    /// Bytes of decoded chunks kept in memory (`store::cache`).
    pub chunk_cache: u64,
    /// Files whose completion completes a training checkpoint (`checkpoints`).
    pub markers: checkpoints::Markers,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            min_version_interval: Duration::from_secs(1),
            read_only: false,
            thinning: history::Thinning::default(),
            replica_sync: false,
            policy: Default::default(),
            chunk_cache: crate::store::cache::default_bytes(),
            markers: checkpoints::Markers::defaults(),
        }
    }
}

/// Content recorded but not yet published: the published values are kept
/// so that metadata-only changes can still go to the catalog at once.
#[derive(Clone, Debug)]
struct ContentOverlay {
    content: Option<ObjectId>,
    size: u64,
    allocated: u64,
    mtime: Time,
    ctime: Time,
}

impl ContentOverlay {
    fn of(n: &Node) -> Self {
        ContentOverlay {
            content: n.content,
            size: n.size,
            allocated: n.allocated,
            mtime: n.mtime,
            ctime: n.ctime,
        }
    }
    fn apply(&self, n: &mut Node) {
        n.content = self.content;
        n.size = self.size;
        n.allocated = self.allocated;
        n.mtime = self.mtime;
        n.ctime = self.ctime;
    }
}

#[derive(Default)]
struct Pending {
    /// ino -> (content to publish, content as published)
    content: HashMap<Ino, (ContentOverlay, ContentOverlay)>,
    /// Versions waiting for their commit, in order.
    versions: Vec<(Ino, u64, Version)>,
    /// Paths (parent, name) a file was renamed to since the last commit,
    /// and when: replacing such a path again forces a commit first.
    placed: HashMap<(Ino, Vec<u8>), Time>,
    /// Checkpoints completed since the last commit (the next one names them).
    checkpoints: Vec<crate::format::CheckpointMark>,
}

/// The shared state of an open file and its number of open handles.
struct OpenFile {
    state: Arc<RwLock<FileState>>,
    handles: u32,
}

/// What the kernel must forget after a change it did not see made (a
/// restore): a name in a directory, or an inode's attributes and pages.
pub enum Inval {
    Entry(Ino, Vec<u8>),
    Inode(Ino),
}

/// Sends [`Inval`]s to the kernel (set by the mount).
pub type Invalidator = Box<dyn Fn(Inval) + Send + Sync>;

/// An open file or directory handle.
enum Handle {
    File {
        ino: Ino,
        state: Arc<RwLock<FileState>>,
        /// The thread that opened it (0: not known).
        opener: u32,
    },
    Dir {
        ino: Ino,
        entries: Arc<Vec<DirEntry>>,
        /// The catalog's count of entry changes before the listing was
        /// taken: while it stands, the listing is the directory now.
        listed_at: u64,
    },
}

pub struct Engine {
    pub db: Arc<Db>,
    pub store: Arc<ObjectStore>,
    staging: PathBuf,
    opts: Options,
    ns: Mutex<()>,
    pending: Mutex<Pending>,
    /// Open regular files and how many handles each has; counted under
    /// this lock so that an open and a last release cannot interleave.
    files: Mutex<HashMap<Ino, OpenFile>>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    next_ino: AtomicU64,
    next_vseq: AtomicU64,
    views: Mutex<snapshots::Views>,
    trees: Mutex<lru::LruCache<ObjectId, Arc<crate::format::Tree>>>,
    /// The configured replicas, the first first.
    replicas: Mutex<Vec<Arc<dyn ReplicaLink>>>,
    /// Loads the chunks ahead of sequential readers.
    readahead: readahead::Readahead,
    /// How many times the kernel holds each inode (lookups not yet
    /// forgotten). An unlinked inode lives on while the kernel holds it.
    lookups: Mutex<HashMap<Ino, u64>>,
    invalidator: Mutex<Option<Invalidator>>,
    /// The number of inodes, and when it was counted: statfs (df, and the
    /// free-space checks of training frameworks) reuses it for a while
    /// rather than scanning every inode record at every call.
    inode_count: Mutex<Option<(std::time::Instant, u64)>>,
    /// One prune at a time (`retention::prune`), and what the last one did.
    prune: Mutex<()>,
    last_prune: Mutex<Option<crate::retention::PruneReport>>,
    /// The policy now (the store's config is re-read by the prune loop).
    policy: Mutex<crate::retention::Policy>,
    /// Files whose name may make them checkpoint markers (`checkpoints`),
    /// and whether a version was recorded since their last close.
    marker_inos: Mutex<HashMap<Ino, checkpoints::MarkerState>>,
}

/// How long statfs reuses a count of the inodes.
const INODE_COUNT_TTL: Duration = Duration::from_secs(10);

/// Threads that load chunks ahead of sequential readers.
const READAHEAD_WORKERS: usize = 6;

/// How long an fsync with `--replica-sync` waits for the replica before EIO.
const REPLICA_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// Decoded trees kept for snapshot lookups and `revfs log`.
const TREE_CACHE: usize = 128;

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether threads `a` and `b` are of one process (0: not known, taken
/// as the same; so is a thread that is gone: the closer then holds the
/// last copies of a descriptor whose opener has exited).
fn same_process(a: u32, b: u32) -> bool {
    if a == 0 || b == 0 || a == b {
        return true;
    }
    match (crate::sys::tgid(a), crate::sys::tgid(b)) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    }
}

/// The attributes the FUSE layer reports for an inode.
#[derive(Clone, Debug)]
pub struct Attr {
    pub ino: Ino,
    pub node: Node,
}

impl Engine {
    /// Creates the root of a new, empty catalog.
    pub fn init_catalog(db: &Db, uid: u32, gid: u32) -> Result<()> {
        let mut b = Batch::default();
        b.put_inode(
            Ino::ROOT,
            &Inode {
                node: Node::new(FileType::Directory, 0o755, uid, gid),
                parents: crate::catalog::db::Parents::one(Ino::ROOT),
            },
        );
        b.mark_dirty(Ino::ROOT);
        b.put_counter("next_ino", 2);
        b.put_counter("next_vseq", 1);
        db.apply(b)?;
        db.flush()
    }

    pub fn new(
        db: Arc<Db>,
        store: Arc<ObjectStore>,
        staging: PathBuf,
        opts: Options,
    ) -> Result<Engine> {
        if !opts.read_only {
            // Staged bytes were never recorded; files in here are left-overs of a crash.
            if staging.exists() {
                std::fs::remove_dir_all(&staging).map_err(Error::io_at(&staging))?;
            }
            std::fs::create_dir_all(&staging).map_err(Error::io_at(&staging))?;
        }
        let readahead = readahead::Readahead::new(&store, READAHEAD_WORKERS);
        let e = Engine {
            next_ino: AtomicU64::new(db.counter("next_ino")?.max(2)),
            next_vseq: AtomicU64::new(db.counter("next_vseq")?.max(1)),
            db,
            store,
            staging,
            opts,
            ns: Mutex::new(()),
            pending: Mutex::new(Pending::default()),
            files: Mutex::new(HashMap::new()),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            views: Mutex::new(snapshots::Views::default()),
            trees: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(TREE_CACHE).expect("non-zero"),
            )),
            replicas: Mutex::new(Vec::new()),
            readahead,
            lookups: Mutex::new(HashMap::new()),
            invalidator: Mutex::new(None),
            inode_count: Mutex::new(None),
            prune: Mutex::new(()),
            last_prune: Mutex::new(None),
            policy: Mutex::new(Default::default()),
            marker_inos: Mutex::new(Default::default()),
        };
        e.set_policy(e.opts.policy.clone());
        if !e.opts.read_only {
            e.drop_orphans()?;
        }
        Ok(e)
    }

    /// The number of inodes, counted at most every [`INODE_COUNT_TTL`].
    fn inode_count(&self) -> u64 {
        let mut c = lock(&self.inode_count);
        match *c {
            Some((at, n)) if at.elapsed() < INODE_COUNT_TTL => n,
            _ => {
                let n = self.db.inode_count() as u64;
                *c = Some((std::time::Instant::now(), n));
                n
            }
        }
    }

    /// How to tell the kernel about changes it did not make.
    pub fn set_invalidator(&self, f: Invalidator) {
        *lock(&self.invalidator) = Some(f);
    }

    fn invalidate(&self, what: Vec<Inval>) {
        if let Some(f) = lock(&self.invalidator).as_ref() {
            for w in what {
                f(w);
            }
        }
    }

    pub fn read_only(&self) -> bool {
        self.opts.read_only
    }

    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// The retention policy in force.
    pub fn policy(&self) -> crate::retention::Policy {
        lock(&self.policy).clone()
    }

    pub fn set_policy(&self, p: crate::retention::Policy) {
        *lock(&self.policy) = p;
    }

    /// The store's replicas, the first first: running replicators on a
    /// mounted store, else links that only report.
    pub fn set_replicas(&self, links: Vec<Arc<dyn ReplicaLink>>) {
        *lock(&self.replicas) = links;
    }

    pub(crate) fn replicas(&self) -> Vec<Arc<dyn ReplicaLink>> {
        lock(&self.replicas).clone()
    }

    /// The state of the first replica (`none` without one).
    pub fn replica_status(&self) -> ReplicaStatus {
        self.replicas()
            .first()
            .map_or_else(ReplicaStatus::none, |r| r.status())
    }

    /// The state of every replica, the first first.
    pub fn replicas_status(&self) -> Vec<ReplicaStatus> {
        self.replicas().iter().map(|r| r.status()).collect()
    }

    /// Refuses when the store cannot be written (read-only, poisoned).
    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.opts.read_only {
            return Err(Error::ReadOnly);
        }
        if let Some(why) = self.store.poison_reason() {
            return Err(Error::Poisoned(why));
        }
        Ok(())
    }

    /// Inodes unlinked while open when the last session ended.
    fn drop_orphans(&self) -> Result<()> {
        let mut b = Batch::default();
        for ino in self.db.orphans()? {
            if self.db.inode(ino)?.is_some_and(|i| i.node.nlink == 0) {
                b.del_inode(ino);
            }
            b.del_orphan(ino);
        }
        self.db.apply(b)
    }

    /// The current inode: catalog record with any pending content applied.
    ///
    /// Pending content is read *before* the catalog: a commit publishes to
    /// the catalog first and clears pending after, so either the overlay or
    /// the published record holds the newest content. (Reading the catalog
    /// first could see the old record and then no overlay: stale content.)
    pub(crate) fn inode(&self, ino: Ino) -> Result<Inode> {
        let overlay = lock(&self.pending)
            .content
            .get(&ino)
            .map(|(c, _)| c.clone());
        let mut i = self.db.inode(ino)?.ok_or(Error::NotFound)?;
        if let Some(c) = overlay {
            c.apply(&mut i.node);
        }
        Ok(i)
    }

    /// Writes an inode into `b`, keeping pending content out of the catalog.
    fn put_inode(&self, b: &mut Batch, ino: Ino, inode: &Inode) {
        let mut p = lock(&self.pending);
        match p.content.get_mut(&ino) {
            Some((c, published)) => {
                *c = ContentOverlay::of(&inode.node);
                let mut rec = inode.clone();
                published.apply(&mut rec.node);
                b.put_inode(ino, &rec);
            }
            None => b.put_inode(ino, inode),
        }
    }

    /// Attributes as seen right now, including unrecorded writes.
    pub fn getattr(&self, ino: Ino) -> Result<Attr> {
        if Space::of(ino) == Space::History {
            return self.snap_getattr(ino);
        }
        let mut node = self.inode(ino)?.node;
        if let Some(f) = self.open_file(ino) {
            let f = f.read().unwrap_or_else(|e| e.into_inner());
            node.size = f.size;
            if let Some(t) = f.mtime {
                node.mtime = t;
                node.ctime = t;
            }
        }
        Ok(Attr { ino, node })
    }

    /// The kernel got a reference to `ino` (an entry reply).
    pub fn remember(&self, ino: Ino) {
        match Space::of(ino) {
            Space::History => lock(&self.views).remember(ino),
            Space::Live => *lock(&self.lookups).entry(ino).or_default() += 1,
        }
    }

    /// Inodes of the history view alive now (`status`: what browsing
    /// history holds in memory).
    pub fn history_inodes(&self) -> usize {
        lock(&self.views).len()
    }

    /// The kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: Ino, n: u64) {
        if Space::of(ino) == Space::History {
            lock(&self.views).forget(ino, n);
            return;
        }
        let gone = {
            let mut l = lock(&self.lookups);
            match l.get_mut(&ino) {
                Some(c) if *c > n => {
                    *c -= n;
                    false
                }
                Some(_) => {
                    l.remove(&ino);
                    true
                }
                None => false,
            }
        };
        if gone {
            // Named again only through a lookup, which watches it again.
            lock(&self.marker_inos).remove(&ino);
        }
        if gone && let Err(e) = self.drop_if_unlinked(ino) {
            tracing::warn!("inode {}: {e}", ino.0);
        }
    }

    /// Whether the kernel or an open handle still uses `ino`.
    fn in_use(&self, ino: Ino) -> bool {
        lock(&self.files).contains_key(&ino) || lock(&self.lookups).contains_key(&ino)
    }

    fn open_file(&self, ino: Ino) -> Option<Arc<RwLock<FileState>>> {
        lock(&self.files).get(&ino).map(|o| o.state.clone())
    }

    fn alloc_ino(&self, b: &mut Batch) -> Ino {
        let ino = self.next_ino.fetch_add(1, Ordering::SeqCst);
        b.put_counter("next_ino", ino + 1);
        Ino(ino)
    }

    /// Marks every directory holding `inode` as changed since the last commit.
    fn touch_parents(b: &mut Batch, inode: &Inode) {
        for p in inode.parents.dirs() {
            b.mark_dirty(p);
        }
    }

    /// A file version's content (reads only its root now).
    pub fn load_manifest(&self, id: Option<ObjectId>) -> Result<Content> {
        Content::open(&self.store, id)
    }

    // ----------------------------------------------------------- files ---

    /// Opens a regular file (emptying it with `truncate`, as O_TRUNC);
    /// returns a handle number.
    pub fn open(&self, ino: Ino, write: bool, truncate: bool) -> Result<u64> {
        self.open_by(ino, write, truncate, 0)
    }

    /// `open` by thread `tid` (the FUSE request's pid; 0: not known), so
    /// that a close by another process can be told apart (`flush_by`).
    pub fn open_by(&self, ino: Ino, write: bool, truncate: bool, tid: u32) -> Result<u64> {
        if Space::of(ino) == Space::History {
            return self.snap_open(ino, write || truncate);
        }
        if write || truncate {
            self.check_writable()?;
        }
        let inode = self.inode(ino)?;
        match inode.node.kind {
            FileType::Regular => {}
            FileType::Directory => return Err(Error::IsDir),
            _ => return Err(Error::Invalid),
        }
        let state = {
            let mut files = lock(&self.files);
            let open = match files.entry(ino) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => v.insert(OpenFile {
                    state: Arc::new(RwLock::new(FileState::new(
                        self.load_manifest(inode.node.content)?,
                    ))),
                    handles: 0,
                }),
            };
            open.handles += 1;
            open.state.clone()
        };
        let fh = self.new_handle(Handle::File {
            ino,
            state: state.clone(),
            opener: tid,
        });
        if truncate {
            state
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .truncate(&self.store, 0)?;
        }
        Ok(fh)
    }

    fn new_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, h);
        fh
    }

    fn handle_file(&self, fh: u64) -> Result<(Ino, Arc<RwLock<FileState>>)> {
        match lock(&self.handles).get(&fh) {
            Some(Handle::File { ino, state, .. }) => Ok((*ino, state.clone())),
            _ => Err(Error::Invalid),
        }
    }

    pub fn read(&self, fh: u64, off: u64, len: u32) -> Result<Vec<u8>> {
        let (_, f) = self.handle_file(fh)?;
        let f = f.read().unwrap_or_else(|e| e.into_inner());
        let mut buf = vec![0u8; len as usize];
        let access = self.readahead.access(fh, off);
        let n = f.read_into(&self.store, off, &mut buf, access)?;
        buf.truncate(n);
        if let Some((from, to)) = self.readahead.after_read(fh, off, off + n as u64) {
            // A chunk the manifest cannot name now is the reader's error later.
            if let Ok(ids) = f.chunks_in(&self.store, from, to) {
                self.readahead.load(&self.store, ids);
            }
            if let Ok(ids) = f.chunks_in(&self.store, off, off + n as u64) {
                self.readahead.read_behind(&self.store, fh, &ids);
            }
        }
        Ok(buf)
    }

    pub fn write(&self, fh: u64, off: u64, data: &[u8]) -> Result<u32> {
        let (ino, f) = self.handle_file(fh)?;
        if Space::of(ino) == Space::History {
            return Err(Error::ReadOnly);
        }
        self.check_writable()?;
        // Before the file's lock, which a prune freeing the space takes;
        // for what a chunking worker still holds too.
        self.store.space.wait_for_room(
            self.store.packs_dir(),
            (data.len() + stream::MOST_UNSTORED) as u64,
        );
        let mut f = f.write().unwrap_or_else(|e| e.into_inner());
        f.write(&self.store, &self.staging, off, data)?;
        Ok(data.len() as u32)
    }

    /// Sets mtime and ctime to `t`.
    fn set_times(&self, ino: Ino, t: Time) -> Result<()> {
        let _ns = lock(&self.ns);
        let mut inode = self.inode(ino)?;
        inode.node.mtime = t;
        inode.node.ctime = t;
        let mut b = Batch::default();
        self.put_inode(&mut b, ino, &inode);
        Self::touch_parents(&mut b, &inode);
        self.db.apply(b)
    }

    /// Called at every close(2): records a version if the file changed.
    pub fn flush(&self, fh: u64) -> Result<()> {
        self.flush_by(fh, 0)
    }

    /// `flush` of a close by thread `tid` (0: not known). A close by
    /// another process than the opener's is not a save: a process that
    /// forks while it writes a file (a sibling thread starting a program;
    /// a data loader's workers) hands the child a copy of the descriptor,
    /// and the child's exec closes it, which flushes, mid-write. Recording
    /// then would put a half-written file in history as a version. The
    /// writer's own close, or the last close of all, records it.
    pub fn flush_by(&self, fh: u64, tid: u32) -> Result<()> {
        let opener = match lock(&self.handles).get(&fh) {
            Some(Handle::File { opener, .. }) => *opener,
            _ => 0,
        };
        if !same_process(opener, tid) {
            tracing::debug!("close of handle {fh} by {tid}, not its opener {opener}'s process");
            return Ok(());
        }
        let (ino, f) = self.handle_file(fh)?;
        if Space::of(ino) == Space::History {
            return Ok(());
        }
        self.record_closed(ino, &f, false)
    }

    /// Records a closed file (`last`: the last close of its open); a
    /// marker's new version completes a checkpoint.
    fn record_closed(&self, ino: Ino, f: &RwLock<FileState>, last: bool) -> Result<()> {
        self.record(ino, f, false)?;
        if self.take_marker_write(ino, last) {
            self.checkpoint_event(ino, checkpoints::Event::Closed);
        }
        Ok(())
    }

    /// Last close of a handle.
    pub fn release(&self, fh: u64) -> Result<()> {
        self.readahead.forget(&self.store, fh);
        let h = lock(&self.handles).remove(&fh);
        let Some(Handle::File { ino, state: f, .. }) = h else {
            return Ok(());
        };
        if Space::of(ino) == Space::History {
            return Ok(());
        }
        let result = self.record_closed(ino, &f, true);
        let mut files = lock(&self.files);
        let last = files.get_mut(&ino).is_none_or(|o| {
            o.handles = o.handles.saturating_sub(1);
            o.handles == 0
        });
        if last {
            if let Err(e) = &result {
                // close() already returned this error (flush records first);
                // the unrecorded bytes go, and their staging space with them.
                tracing::error!(
                    "inode {}: changes since the last version dropped: {e}",
                    ino.0
                );
            }
            files.remove(&ino);
            drop(files);
            self.drop_if_unlinked(ino)?;
        }
        result
    }

    /// fsync(2): the file's data and metadata are durable when this returns.
    pub fn fsync(&self, fh: u64) -> Result<()> {
        let (ino, f) = self.handle_file(fh)?;
        if Space::of(ino) == Space::History {
            return Ok(());
        }
        self.record(ino, &f, true)?;
        self.commit(true)?;
        if self.opts.replica_sync {
            // Every replica holds it, or the fsync fails.
            let head = CommitSeq(self.db.counter("head")?);
            for r in self.replicas() {
                r.wait_for(head, REPLICA_SYNC_TIMEOUT).map_err(|e| {
                    tracing::error!("fsync with --replica-sync: {e}");
                    Error::Io(std::io::Error::from_raw_os_error(libc::EIO))
                })?;
            }
        }
        Ok(())
    }

    /// Records a version of `ino` if it changed.
    fn record(&self, ino: Ino, f: &RwLock<FileState>, fsynced: bool) -> Result<()> {
        // Staged writes store their chunks only now: room for them is
        // waited for as a write waits for its own, before the file's lock.
        let staged = f.read().unwrap_or_else(|e| e.into_inner()).staged();
        if staged > 0 {
            self.store.space.wait_for_room(
                self.store.packs_dir(),
                staged + stream::MOST_UNSTORED as u64,
            );
        }
        let mut st = f.write().unwrap_or_else(|e| e.into_inner());
        if !st.dirty {
            if fsynced {
                self.mark_last_version_fsynced(ino);
            }
            if let Some(t) = st.mtime.take() {
                drop(st);
                return self.set_times(ino, t);
            }
            return Ok(());
        }
        self.check_writable()?;
        let now = Time::now();
        if self.has_unmergeable_version(ino, now) {
            // Every version gets a commit of its own, so that every version
            // is reachable in history; publish the earlier one first.
            self.commit(false)?;
        }
        let id = st.record(&self.store)?;
        crate::crashpoint::crash_point("record:chunks-written");
        let size = st.size;
        let _ns = lock(&self.ns);
        let mut inode = match self.inode(ino) {
            Ok(i) => i,
            // Unlinked and gone: nothing left to version.
            Err(Error::NotFound) => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut p = lock(&self.pending);
        let published = match p.content.get(&ino) {
            Some((_, published)) => published.clone(),
            None => ContentOverlay::of(&inode.node),
        };
        if let Some(t) = st.mtime.take() {
            inode.node.mtime = t;
            inode.node.ctime = t;
        }
        inode.node.content = id;
        inode.node.size = size;
        inode.node.allocated = st.allocated();
        p.content
            .insert(ino, (ContentOverlay::of(&inode.node), published));
        let now = Time::now();
        let version = Version {
            time: now,
            size,
            mtime: inode.node.mtime,
            manifest: id,
            fsynced,
            commit: CommitSeq(0),
        };
        let merge = p
            .versions
            .iter()
            .rposition(|(i, _, v)| *i == ino && self.mergeable(v, now));
        match merge {
            Some(at) => p.versions[at].2 = version,
            None => {
                let vseq = self.next_vseq.fetch_add(1, Ordering::SeqCst);
                p.versions.push((ino, vseq, version));
            }
        }
        drop(p);
        let mut b = Batch::default();
        Self::touch_parents(&mut b, &inode);
        self.db.apply(b)?;
        st.dirty = false;
        self.note_marker_write(ino);
        Ok(())
    }

    /// Whether a new version at `now` may replace pending version `v`.
    fn mergeable(&self, v: &Version, now: Time) -> bool {
        !v.fsynced
            && (now.as_nanos() - v.time.as_nanos())
                < self.opts.min_version_interval.as_nanos() as i128
    }

    fn has_unmergeable_version(&self, ino: Ino, now: Time) -> bool {
        lock(&self.pending)
            .versions
            .iter()
            .any(|(i, _, v)| *i == ino && !self.mergeable(v, now))
    }

    fn mark_last_version_fsynced(&self, ino: Ino) {
        let mut p = lock(&self.pending);
        if let Some((_, _, v)) = p.versions.iter_mut().rev().find(|(i, _, _)| *i == ino) {
            v.fsynced = true;
        }
    }

    /// Records every changed open file (before a clean unmount).
    pub fn record_all(&self) -> Result<()> {
        let files: Vec<_> = lock(&self.files)
            .iter()
            .map(|(i, o)| (*i, o.state.clone()))
            .collect();
        for (ino, f) in files {
            self.record(ino, &f, false)?;
        }
        Ok(())
    }

    /// Flushes everything: records open files, commits, seals the pack.
    pub fn shutdown(&self) -> Result<()> {
        if self.opts.read_only {
            return Ok(());
        }
        self.record_all()?;
        self.commit(true)?;
        self.store.seal()?;
        self.db.flush()
    }
}
