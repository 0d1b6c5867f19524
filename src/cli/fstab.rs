//! The form `mount -t fuse.revfs` and `/etc/fstab` use: the fuse
//! package's `mount.fuse` runs `revfs STORE MOUNTPOINT -o OPT,OPT=VALUE,...`,
//! which becomes `revfs mount STORE MOUNTPOINT --daemon --opt --opt value`
//! (returning once the mount serves, as mount(8) expects). The generic
//! options mount(8) adds (rw, dev, suid, exec, auto, ...) mean nothing to
//! revfs and are dropped; `ro` is `--read-only`; any other name is a flag
//! of `revfs mount` with `_` for `-` (`replica=DIR`, `commit_interval=5s`,
//! `replica_sync`, `metrics_addr=127.0.0.1:9464`, `verify_every=1d`).
//!
//! /etc/fstab:
//! ```text
//! /data/store  /data/mnt  fuse.revfs  replica=/backup/replica,verify_every=1d,_netdev  0  0
//! ```

use std::ffi::OsString;

/// Options mount(8) and mount.fuse pass that revfs has no use for.
const GENERIC: &[&str] = &[
    "rw",
    "defaults",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "_netdev",
    "nofail",
    "atime",
    "noatime",
    "relatime",
    "async",
    "sync",
    "allow_other",
    "default_permissions",
];

/// `args` in the fstab form, as `revfs mount` arguments; None when they are
/// not in that form (a subcommand, or a flag, comes first).
pub fn translate(args: &[OsString], subcommands: &[String]) -> Option<Vec<OsString>> {
    let first = args.get(1)?.to_str()?;
    if first.starts_with('-') || subcommands.iter().any(|s| s == first) || args.len() < 3 {
        return None;
    }
    // A bare word that names nothing is a mistyped command (`revfs unmount
    // MNT`), not a store: clap then says "unrecognized subcommand".
    if !first.contains('/') && !std::path::Path::new(first).exists() {
        return None;
    }
    let mut out: Vec<OsString> = vec![
        args[0].clone(),
        "mount".into(),
        args[1].clone(),
        args[2].clone(),
    ];
    out.push("--daemon".into());
    let mut rest = args[3..].iter();
    while let Some(a) = rest.next() {
        if a == "-o" {
            let opts = rest.next()?.to_str()?.to_string();
            for opt in opts.split(',').filter(|o| !o.is_empty()) {
                let (name, value) = match opt.split_once('=') {
                    Some((n, v)) => (n, Some(v)),
                    None => (opt, None),
                };
                if GENERIC.contains(&name) || name.starts_with("x-") || name.starts_with("comment=")
                {
                    continue;
                }
                if name == "ro" {
                    out.push("--read-only".into());
                    continue;
                }
                out.push(format!("--{}", name.replace('_', "-")).into());
                if let Some(v) = value {
                    out.push(v.into());
                }
            }
        } else {
            // mount.fuse passes nothing else; keep what a user added.
            out.push(a.clone());
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn fstab_options_become_mount_flags() {
        let subs = vec!["mount".to_string(), "status".to_string()];
        let got = translate(
            &strs(&[
                "revfs",
                "/s",
                "/m",
                "-o",
                "rw,nosuid,nodev,replica=/r,commit_interval=5s,replica_sync,ro,_netdev",
            ]),
            &subs,
        )
        .unwrap();
        assert_eq!(
            got,
            strs(&[
                "revfs",
                "mount",
                "/s",
                "/m",
                "--daemon",
                "--replica",
                "/r",
                "--commit-interval",
                "5s",
                "--replica-sync",
                "--read-only"
            ])
        );
        assert!(translate(&strs(&["revfs", "status", "/s"]), &subs).is_none());
        assert!(translate(&strs(&["revfs", "--help"]), &subs).is_none());
        assert!(translate(&strs(&["revfs", "/s"]), &subs).is_none());
        assert!(translate(&strs(&["revfs", "unmount", "/m"]), &subs).is_none());
        assert!(translate(&strs(&["revfs", "s3://b/p", "/m"]), &subs).is_some());
    }
}
