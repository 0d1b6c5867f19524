//! A store and its replica are their owner's alone: another local user
//! (run with `setpriv` as nobody) can neither read, list nor connect to
//! anything under them, even where the mount itself would refuse; a store
//! made with looser modes is tightened when it is opened.
// Tests and examples may unwrap, and kill/signal their own children with libc.
#![allow(clippy::unwrap_used, unsafe_code)]

mod common;

use common::{Mount, as_nobody};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Every path under `dir` with group or other permission bits set.
fn open_to_others(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        if m.permissions().mode() & 0o077 != 0 {
            out.push(format!(
                "{} {:o}",
                p.display(),
                m.permissions().mode() & 0o777
            ));
        }
        if m.is_dir() {
            stack.extend(fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    out
}

#[test]
fn nobody_else_reads_lists_or_connects_to_a_store_or_its_replica() {
    let Some((mut m, replica)) = Mount::with_replica(&[]) else {
        return;
    };
    // The temp dirs themselves are 0700: open them, so that only revfs's
    // own modes stand between another user and the store.
    for d in [m.tmp.path(), m.mnt.as_path()] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    assert!(
        as_nobody(&format!("ls {}", m.tmp.path().display())),
        "setpriv works"
    );
    fs::write(m.p("secret.txt"), "TOPSECRET\n").unwrap();
    fs::set_permissions(m.p("secret.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    common::wait_replicated(&m.store, Duration::from_secs(30));
    // The mount refuses nobody...
    assert!(!as_nobody(&format!("cat {}", m.p("secret.txt").display())));
    // ...and so does everything under the store and the replica.
    let (s, r) = (m.store.display().to_string(), replica.display().to_string());
    for script in [
        format!("ls {s}"),
        format!("cat {s}/revfs.conf"),
        format!("ls {s}/packs"),
        format!("cat {s}/packs/*"),
        format!("grep -r TOPSECRET {s}"),
        format!("ls {r}"),
        format!("cat {r}/packs/*"),
        format!("grep -r TOPSECRET {r}"),
        format!(
            "python3 -c 'import socket; s=socket.socket(socket.AF_UNIX); s.connect(\"{s}/daemon.sock\")'"
        ),
    ] {
        assert!(!as_nobody(&script), "nobody could: {script}");
    }
    assert_eq!(open_to_others(&m.store), Vec::<String>::new());
    assert_eq!(open_to_others(&replica), Vec::<String>::new());
    m.unmount();

    // A store (and replica) with looser modes, as an older revfs left them.
    for d in [&m.store, &replica] {
        assert!(
            Command::new("chmod")
                .args(["-R", "go+rX"])
                .arg(d)
                .status()
                .unwrap()
                .success()
        );
    }
    assert!(as_nobody(&format!("cat {s}/revfs.conf")), "loosened");
    m.start(&[]);
    assert!(m.log_text().contains("now owner-only"), "{}", m.log_text());
    assert_eq!(open_to_others(&m.store), Vec::<String>::new());
    assert_eq!(open_to_others(&replica), Vec::<String>::new());
    assert!(!as_nobody(&format!("cat {s}/revfs.conf")));
    assert_eq!(fs::read(m.p("secret.txt")).unwrap(), b"TOPSECRET\n");
}
