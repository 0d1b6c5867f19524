//! The few libc calls revfs needs, behind safe functions: this is the one
//! module allowed `unsafe` (see `[lints]` in Cargo.toml). Each block says
//! why it is sound. Also the durable-file helpers built on the same calls
//! (fsync of a directory; publishing a file whole).
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::path::Path;

/// Files and directories this process creates are its owner's alone
/// (umask 077): a store, its catalog, staging files, the control socket
/// and a replica's files are 0600 / 0700 whoever runs revfs.
pub fn private_umask() {
    // SAFETY: umask only sets this process's file mode creation mask.
    unsafe {
        libc::umask(0o077);
    }
}

/// Output to a closed pipe (`revfs checkpoints --json | head`) ends the
/// command quietly, as it does other Unix tools, instead of a failed print.
/// Not for the daemon: it must live on when a control client goes away.
pub fn default_sigpipe() {
    // SAFETY: restores the default disposition of one signal; no handler runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The real user and group of this process.
pub fn uid_gid() -> (u32, u32) {
    // SAFETY: getuid/getgid take no arguments and cannot fail.
    unsafe { (libc::getuid(), libc::getgid()) }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid takes no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Takes an exclusive flock on `f` without waiting; false when another
/// open file description holds it.
pub fn try_lock(f: &File) -> bool {
    // SAFETY: flock on a file descriptor that `f` keeps open.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Starts the writeback of `len` bytes of `f` at `off` without waiting for
/// it (sync_file_range SYNC_FILE_RANGE_WRITE): a later fdatasync then finds
/// them written. Durability still comes only from that fdatasync.
pub fn start_writeback(f: &File, off: u64, len: u64) -> std::io::Result<()> {
    sync_range(f, off, len, libc::SYNC_FILE_RANGE_WRITE)
}

/// Waits until the writeback of `len` bytes of `f` at `off` (started by
/// [`start_writeback`]) is done, then drops those pages from the page
/// cache (see [`drop_cached`]). An error is a failed write of those bytes.
pub fn drop_written(f: &File, off: u64, len: u64) -> std::io::Result<()> {
    let wait = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    sync_range(f, off, len, wait)?;
    drop_cached(f, off, len)
}

fn sync_range(f: &File, off: u64, len: u64, flags: libc::c_uint) -> std::io::Result<()> {
    // SAFETY: sync_file_range only reads its integer arguments.
    let r = unsafe {
        libc::sync_file_range(
            f.as_raw_fd(),
            off as libc::off64_t,
            len as libc::off64_t,
            flags,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Tells the kernel that `len` bytes of `f` at `off` will not be read
/// again soon (posix_fadvise DONTNEED): clean pages leave the page cache
/// at once, and the next pages written or read reuse them. Only a hint:
/// pages still dirty stay.
pub fn drop_cached(f: &File, off: u64, len: u64) -> std::io::Result<()> {
    // SAFETY: posix_fadvise only reads its integer arguments.
    let r = unsafe {
        libc::posix_fadvise(
            f.as_raw_fd(),
            off as libc::off64_t,
            len as libc::off64_t,
            libc::POSIX_FADV_DONTNEED,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(r))
    }
}

/// `statvfs(2)` of the filesystem holding `path`.
pub fn statvfs(path: &Path) -> std::io::Result<libc::statvfs> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated string and `s` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(s)
}

/// (total, available to unprivileged users) bytes of the filesystem
/// holding `path`.
pub fn fs_space(path: &Path) -> Option<(u64, u64)> {
    let s = statvfs(path).ok()?;
    let frsize = s.f_frsize;
    Some((s.f_blocks * frsize, s.f_bavail * frsize))
}

/// The thread group (process) of thread `tid`, from /proc; None when it
/// is gone.
pub fn tgid(tid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The machine's memory in bytes (`sysconf`), None when it cannot say.
pub fn memory_bytes() -> Option<u64> {
    // sysconf only reads system configuration.
    let (pages, size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    (pages > 0 && size > 0).then(|| pages as u64 * size as u64)
}

/// Tells systemd (a `Type=notify` unit: `$NOTIFY_SOCKET`) the service's
/// `state` ("READY=1", "STOPPING=1"); nothing without one.
pub fn sd_notify(state: &str) {
    use std::os::linux::net::SocketAddrExt;
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name),
        None => std::os::unix::net::SocketAddr::from_pathname(&path),
    };
    let sent = addr.and_then(|a| {
        let s = std::os::unix::net::UnixDatagram::unbound()?;
        s.send_to_addr(state.as_bytes(), &a)
    });
    if let Err(e) = sent {
        tracing::warn!("systemd notify {state}: {e}");
    }
}

/// Detaches the mount at `mnt` (`umount -l`); errors are ignored (there
/// may be nothing mounted).
pub fn lazy_unmount(mnt: &Path) {
    if let Ok(c) = std::ffi::CString::new(mnt.as_os_str().as_encoded_bytes()) {
        // SAFETY: `c` is a NUL-terminated string; umount2 touches no memory of ours.
        unsafe {
            libc::umount2(c.as_ptr(), libc::MNT_DETACH);
        }
    }
}

/// The file behind descriptor `fd`, when it is open; the caller hands
/// over its ownership (a descriptor its parent passed to it alone).
pub fn own_fd(fd: RawFd) -> Option<File> {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: `fd` is open (checked above) and, by the caller's contract,
    // owned by nothing else in this process.
    Some(unsafe { File::from_raw_fd(fd) })
}

/// Makes `cmd`'s child start a new session (no controlling terminal) and
/// keep descriptor `keep` open across exec.
pub fn detach_keeping(cmd: &mut std::process::Command, keep: RawFd) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the hook runs in the child between fork and exec and calls
    // only setsid and fcntl, which are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            libc::fcntl(keep, libc::F_SETFD, 0);
            Ok(())
        });
    }
}

/// Removes an environment variable of this process. Call it only while
/// the process has one thread (the environment is not thread-safe).
pub fn remove_env_single_threaded(name: &str) {
    // SAFETY: by this function's contract no other thread reads or writes
    // the environment meanwhile.
    unsafe { std::env::remove_var(name) }
}

/// fsync(2) of directory `dir`: the entries made or removed in it are durable.
pub fn sync_dir(dir: &Path) -> crate::error::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(crate::error::Error::io_at(dir))
}

/// Writes the file `dst` so that a crash leaves its old bytes or all of
/// the new ones: a temporary name beside it with what `fill` writes,
/// fsync, rename, fsync of the directory (made when missing).
pub fn publish(
    dst: &Path,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> crate::error::Result<()> {
    use crate::error::Error;
    let dir = dst.parent().unwrap_or(Path::new(".")).to_path_buf();
    std::fs::create_dir_all(&dir).map_err(Error::io_at(&dir))?;
    let file = dst
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".tmp-{}-{file}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        fill(&mut f)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dst)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::IoAt {
            path: dst.to_path_buf(),
            source: e,
        });
    }
    sync_dir(&dir)
}

/// `head.len()` bytes of `f` at `offset` into `head`, and the `body_len`
/// bytes after them into a new buffer, with one `preadv(2)` per attempt:
/// a record's header and payload apart, without zeroing the payload's
/// buffer first or copying it out of a joint one.
pub fn pread_split(
    f: &File,
    offset: u64,
    head: &mut [u8],
    body_len: usize,
) -> std::io::Result<Vec<u8>> {
    let mut body: Vec<u8> = Vec::with_capacity(body_len);
    let total = head.len() + body_len;
    read_fully(offset, total, |done, at| {
        let (h_at, b_at) = (done.min(head.len()), done.saturating_sub(head.len()));
        let iov = [
            libc::iovec {
                iov_base: head[h_at..].as_mut_ptr().cast(),
                iov_len: head.len() - h_at,
            },
            libc::iovec {
                // SAFETY: within the capacity reserved above; the kernel
                // writes these bytes before `set_len` counts them.
                iov_base: unsafe { body.as_mut_ptr().add(b_at) }.cast(),
                iov_len: body_len - b_at,
            },
        ];
        // SAFETY: both iovecs point at writable memory of their length
        // that lives through the call; the fd is open while `f` is.
        unsafe { libc::preadv(f.as_raw_fd(), iov.as_ptr(), 2, at) }
    })?;
    // SAFETY: the kernel wrote every body byte.
    unsafe { body.set_len(body_len) };
    Ok(body)
}

/// Calls `read(done, at)` (a pread of what is left: `done` bytes read so
/// far, `at` the file offset they reach) until `total` bytes from
/// `offset` are read; EINTR is retried and an early end of file is an
/// error (UnexpectedEof).
fn read_fully(
    offset: u64,
    total: usize,
    mut read: impl FnMut(usize, libc::off_t) -> isize,
) -> std::io::Result<()> {
    let mut done = 0usize;
    while done < total {
        let at = libc::off_t::try_from(offset + done as u64)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        let n = read(done, at);
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        }
        done += n as usize;
    }
    Ok(())
}

/// What O_DIRECT asks of offsets, lengths and buffers here (the page size
/// covers every logical block size up to it).
const DIRECT_ALIGN: usize = 4096;

thread_local! {
    /// A thread's buffer for O_DIRECT reads: faulted in once, not per read.
    static DIRECT_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Opens `path` for reads that bypass the page cache (O_DIRECT).
pub fn open_direct(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

/// Pages of `len` bytes of `f` at `off` in the page cache now (cachestat,
/// Linux 6.5); None where the kernel cannot say.
pub fn cached_pages(f: &File, off: u64, len: u64) -> Option<u64> {
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    // The same number in every architecture's table (it came after the
    // tables were unified); not yet in libc for x86_64.
    const SYS_CACHESTAT: libc::c_long = 451;
    let range = Range { off, len };
    let mut stat = Stat::default();
    // SAFETY: cachestat reads `range` and writes one `Stat` (the kernel's
    // struct cachestat: five u64) through valid pointers; `f` is open.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            f.as_raw_fd(),
            &range as *const Range,
            &mut stat as *mut Stat,
            0u32,
        )
    };
    (r == 0).then_some(stat.nr_cache)
}

/// [`pread_split`] of `f` opened with [`open_direct`]: the aligned span
/// around the bytes is read into this thread's buffer and the body copied
/// out. Fails (EINVAL) where the filesystem refuses O_DIRECT.
pub fn pread_direct(
    f: &File,
    offset: u64,
    head: &mut [u8],
    body_len: usize,
) -> std::io::Result<Vec<u8>> {
    let total = head.len() + body_len;
    let start = offset & !(DIRECT_ALIGN as u64 - 1);
    let skip = (offset - start) as usize;
    let want = skip + total;
    let span = want.next_multiple_of(DIRECT_ALIGN);
    DIRECT_BUF.with_borrow_mut(|buf| {
        if buf.len() < span + DIRECT_ALIGN {
            *buf = vec![0u8; span + DIRECT_ALIGN];
        }
        let a = buf.as_ptr().align_offset(DIRECT_ALIGN);
        let dst = &mut buf[a..a + span];
        read_fully(start, want, |done, at| {
            // SAFETY: `dst[done..]` is writable memory of `span - done`
            // bytes that lives through the call; the fd is open while `f` is.
            unsafe {
                libc::pread(
                    f.as_raw_fd(),
                    dst[done..].as_mut_ptr().cast(),
                    span - done,
                    at,
                )
            }
        })?;
        head.copy_from_slice(&dst[skip..skip + head.len()]);
        Ok(dst[skip + head.len()..want].to_vec())
    })
}

/// Keeps background work at `rate` bytes a second: `took(n)` sleeps until
/// the bytes done so far are due (u64::MAX: no wait).
pub struct Pace {
    rate: u64,
    start: std::time::Instant,
    done: u64,
}

impl Pace {
    pub fn new(rate: u64) -> Pace {
        Pace {
            rate: rate.max(1),
            start: std::time::Instant::now(),
            done: 0,
        }
    }

    pub fn unlimited() -> Pace {
        Pace::new(u64::MAX)
    }

    pub fn took(&mut self, bytes: u64) {
        self.done = self.done.saturating_add(bytes);
        if self.rate == u64::MAX {
            return;
        }
        let due = std::time::Duration::from_secs_f64(self.done as f64 / self.rate as f64);
        if let Some(wait) = due.checked_sub(self.start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn pread_split_reads_head_and_body_apart_and_refuses_past_the_end() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("f");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let f = File::open(&p).unwrap();
        let mut head = [0u8; 44];
        let body = pread_split(&f, 1000, &mut head, 60_000).unwrap();
        assert_eq!(&head[..], &data[1000..1044]);
        assert_eq!(body, &data[1044..61_044]);
        let body = pread_split(&f, 0, &mut head, 0).unwrap();
        assert!(body.is_empty() && head[..] == data[..44]);
        assert!(pread_split(&f, 99_990, &mut head, 10).is_err());
    }

    #[test]
    fn a_direct_read_of_an_unaligned_record_gives_the_bytes_a_buffered_one_does() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("f");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let Ok(f) = open_direct(&p) else {
            panic!(
                "O_DIRECT refused on {}: the test needs a disk filesystem",
                p.display()
            )
        };
        for (at, len) in [(1000u64, 60_000usize), (4096, 4052), (7, 0), (299_000, 956)] {
            let mut head = [0u8; 44];
            let body = pread_direct(&f, at, &mut head, len).unwrap();
            let at = at as usize;
            assert_eq!(&head[..], &data[at..at + 44]);
            assert_eq!(body, &data[at + 44..at + 44 + len]);
        }
        let mut head = [0u8; 44];
        assert!(pread_direct(&f, 299_990, &mut head, 10).is_err());
    }

    #[test]
    fn cached_pages_counts_what_the_page_cache_holds_of_a_range() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("f");
        std::fs::write(&p, vec![7u8; 1 << 20]).unwrap();
        let f = File::open(&p).unwrap();
        f.sync_all().unwrap();
        let mut buf = vec![0u8; 64 << 10];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert!(cached_pages(&f, 0, 64 << 10).unwrap() > 0);
        drop_cached(&f, 0, 1 << 20).unwrap();
        assert_eq!(cached_pages(&f, 0, 1 << 20), Some(0));
    }

    #[test]
    fn tgid_names_the_process_of_a_thread_and_not_of_a_child() {
        let me = std::process::id();
        // gettid only names the calling thread.
        let tid = unsafe { libc::gettid() } as u32;
        assert_eq!(tgid(tid), Some(me));
        let other = std::thread::spawn(|| tgid(unsafe { libc::gettid() } as u32));
        assert_eq!(other.join().unwrap(), Some(me));
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert_eq!(tgid(child.id()), Some(child.id()));
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(tgid(u32::MAX), None);
    }
}
