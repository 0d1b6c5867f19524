//! POSIX ACLs through a real mount, with the real `setfacl`/`getfacl` and
//! another user (`setpriv` as nobody): the kernel enforces an access ACL
//! revfs keeps, a default ACL is inherited by new files and directories
//! (the umask does not count there), chmod and the ACL's mask agree, and
//! snapshots keep ACLs exactly.
// Tests and examples may unwrap, and kill/signal their own children with libc.
#![allow(clippy::unwrap_used, unsafe_code)]

mod common;

use common::{Mount, as_nobody};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

fn sh(script: &str) -> (bool, String) {
    let out = Command::new("sh").args(["-c", script]).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// `getfacl` of `path`, the entries only.
fn acl_of(path: &std::path::Path) -> String {
    let (ok, out) = sh(&format!("getfacl -cp {}", path.display()));
    assert!(ok, "{out}");
    out
}

#[test]
fn acls_are_enforced_inherited_kept_by_chmod_and_by_snapshots() {
    let Some(m) = Mount::new(&[]) else { return };
    for d in [m.tmp.path(), m.mnt.as_path()] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let f = m.p("weights.bin");
    fs::write(&f, b"the best model\n").unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
    let cat = format!("cat {}", f.display());
    assert!(!as_nobody(&cat), "0600 keeps nobody out");
    let (ok, out) = sh(&format!("setfacl -m u:nobody:r {}", f.display()));
    assert!(ok, "setfacl: {out}");
    assert!(as_nobody(&cat), "the ACL lets nobody read");
    assert!(
        !as_nobody(&format!("echo x >> {}", f.display())),
        "but not write"
    );
    // The mask is the group bits: chmod moves it, and it limits nobody.
    assert_eq!(fs::metadata(&f).unwrap().mode() & 0o777, 0o640);
    fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
    assert!(acl_of(&f).contains("mask::---"), "{}", acl_of(&f));
    assert!(!as_nobody(&cat), "a mask of --- stops the named entry");
    fs::set_permissions(&f, fs::Permissions::from_mode(0o640)).unwrap();
    assert!(as_nobody(&cat));

    // A default ACL: new files and directories inherit it, whatever the umask.
    let d = m.p("shared");
    fs::create_dir(&d).unwrap();
    let (ok, out) = sh(&format!(
        "setfacl -d -m u:nobody:rwx {0} && setfacl -d -m o::- {0}",
        d.display()
    ));
    assert!(ok, "{out}");
    let (ok, out) = sh(&format!(
        "umask 077; echo data > {0}/new.txt && mkdir {0}/sub && echo more > {0}/sub/deeper.txt",
        d.display()
    ));
    assert!(ok, "{out}");
    let new = d.join("new.txt");
    assert_eq!(
        fs::metadata(&new).unwrap().mode() & 0o777,
        0o660,
        "{}",
        acl_of(&new)
    );
    assert!(acl_of(&new).contains("user:nobody:rwx"), "{}", acl_of(&new));
    assert!(acl_of(&d.join("sub")).contains("default:user:nobody:rwx"));
    assert!(acl_of(&d.join("sub/deeper.txt")).contains("user:nobody:rwx"));
    fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
    assert!(as_nobody(&format!("cat {}/sub/deeper.txt", d.display())));
    assert!(
        as_nobody(&format!("echo x >> {}", new.display())),
        "rw through the inherited ACL"
    );
    // Only the two ACL names of system.* are kept; a default ACL is a directory's.
    let (ok, _) = sh(&format!("setfacl -d -m u:nobody:r {}", f.display()));
    assert!(!ok, "a default ACL on a file");

    // Snapshots keep ACLs exactly, and the kernel enforces them there too.
    common::commit(&m.store);
    let (ok, out) = common::revfs(&[
        "snapshot".as_ref(),
        "create".as_ref(),
        m.mnt.as_os_str(),
        "acl".as_ref(),
    ]);
    assert!(ok, "{out}");
    let snap = m.p(".snapshots/acl");
    assert_eq!(acl_of(&snap.join("weights.bin")), acl_of(&f));
    assert_eq!(acl_of(&snap.join("shared/sub")), acl_of(&d.join("sub")));
    assert!(as_nobody(&format!("cat {}/weights.bin", snap.display())));
    let (ok, _) = sh(&format!("setfacl -b {}", f.display()));
    assert!(ok);
    assert!(!as_nobody(&cat), "removing the ACL takes the access away");
    assert!(
        as_nobody(&format!("cat {}/weights.bin", snap.display())),
        "the snapshot keeps it"
    );
}
