//! Shell completions and the man page, generated from the command line's
//! definition: bash accepts the completion script, and the man page names
//! every command.
// Tests and examples may unwrap, and kill/signal their own children with libc.
#![allow(clippy::unwrap_used, unsafe_code)]

mod common;

use std::process::Command;

fn out(args: &[&str]) -> String {
    let o = Command::new(common::BIN).args(args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn completions_for_bash_parse_and_know_the_commands() {
    let script = out(&["completions", "bash"]);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("revfs.bash");
    std::fs::write(&path, &script).unwrap();
    let st = Command::new("bash").arg("-n").arg(&path).status().unwrap();
    assert!(st.success(), "bash -n rejects the completion script");
    for cmd in ["mount", "prune", "verify", "recover", "drill", "status"] {
        assert!(script.contains(cmd), "{cmd} not completed");
    }
    for shell in ["zsh", "fish"] {
        assert!(!out(&["completions", shell]).is_empty());
    }
}

#[test]
fn the_man_page_is_roff_and_names_every_command() {
    let page = out(&["man"]);
    assert!(page.contains(".TH revfs 1"), "{page}");
    for cmd in [
        "init", "mount", "prune", "verify", "recover", "drill", "snapshot", "log",
    ] {
        assert!(page.contains(cmd), "{cmd} missing from the man page");
    }
}

#[test]
fn install_puts_the_binary_man_page_and_completions_under_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join("scripts/install.sh"))
        .env("PREFIX", tmp.path())
        .env("REVFS_BIN", common::BIN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "bin/revfs",
        "share/man/man1/revfs.1",
        "share/bash-completion/completions/revfs",
        "share/zsh/site-functions/_revfs",
        "share/fish/vendor_completions.d/revfs.fish",
    ] {
        let p = tmp.path().join(f);
        assert!(std::fs::metadata(&p).unwrap().len() > 0, "{f}");
    }
}
