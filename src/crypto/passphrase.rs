//! Where a passphrase comes from, the same way for every command:
//! `--password-file FILE` (its first line), else `REVFS_PASSWORD`, else a
//! prompt on the terminal (not echoed). A new passphrase (`init --encrypt`,
//! `key add`, `key passwd`) comes from `--new-password-file FILE`, else
//! `REVFS_NEW_PASSWORD`, else a prompt asked twice; `init` takes the
//! current-passphrase sources too, since there is no current one yet.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use zeroize::Zeroizing;

pub const ENV: &str = "REVFS_PASSWORD";
pub const NEW_ENV: &str = "REVFS_NEW_PASSWORD";

static FILE: OnceLock<PathBuf> = OnceLock::new();
/// What a prompt was answered, so one command asks once.
static PROMPTED: std::sync::Mutex<Option<Zeroizing<String>>> = std::sync::Mutex::new(None);
static NEW_FILE: OnceLock<PathBuf> = OnceLock::new();

/// `--password-file` (set once, by the CLI).
pub fn set_file(p: PathBuf) {
    let _ = FILE.set(p);
}

/// `--new-password-file` (set once, by the CLI).
pub fn set_new_file(p: PathBuf) {
    let _ = NEW_FILE.set(p);
}

fn from_file(p: &Path) -> Result<Zeroizing<String>> {
    let s = Zeroizing::new(std::fs::read_to_string(p).map_err(Error::io_at(p))?);
    let line = s.lines().next().unwrap_or("");
    Ok(Zeroizing::new(line.to_string()))
}

fn tty() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stdin())
}

fn prompt(text: &str) -> Result<Zeroizing<String>> {
    rpassword::prompt_password(text)
        .map(Zeroizing::new)
        .map_err(|e| Error::Store(format!("reading the passphrase: {e}")))
}

/// The passphrase this command was given already (file, environment or
/// an answered prompt), without asking: what a child process it starts
/// for the same store is handed.
pub fn known() -> Option<Zeroizing<String>> {
    if let Some(f) = FILE.get() {
        return from_file(f).ok();
    }
    if let Ok(p) = std::env::var(ENV) {
        return Some(Zeroizing::new(p));
    }
    PROMPTED.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The passphrase of the encrypted store at `store`.
pub fn current(store: &Path) -> Result<Zeroizing<String>> {
    if let Some(f) = FILE.get() {
        return from_file(f);
    }
    if let Ok(p) = std::env::var(ENV) {
        return Ok(Zeroizing::new(p));
    }
    let mut asked = PROMPTED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = asked.as_ref() {
        return Ok(p.clone());
    }
    if tty() {
        let p = prompt(&format!("passphrase for {}: ", store.display()))?;
        *asked = Some(p.clone());
        return Ok(p);
    }
    Err(Error::Store(format!(
        "{}: store is encrypted; give its passphrase in {ENV}, with --password-file FILE, \
         or on a terminal",
        store.display()
    )))
}

/// A new passphrase for `store` (asked twice on a terminal); `init` also
/// takes the current-passphrase sources.
pub fn new(store: &Path, for_init: bool) -> Result<Zeroizing<String>> {
    let p = if let Some(f) = NEW_FILE.get() {
        from_file(f)?
    } else if let Ok(p) = std::env::var(NEW_ENV) {
        Zeroizing::new(p)
    } else if for_init && (FILE.get().is_some() || std::env::var_os(ENV).is_some()) {
        current(store)?
    } else if tty() {
        let a = prompt(&format!("new passphrase for {}: ", store.display()))?;
        let b = prompt("again: ")?;
        if *a != *b {
            return Err(Error::Store("the two passphrases differ".into()));
        }
        a
    } else {
        return Err(Error::Store(format!(
            "{}: give the new passphrase in {NEW_ENV}, with --new-password-file FILE, or on a \
             terminal",
            store.display()
        )));
    };
    if p.is_empty() {
        return Err(Error::Store("the passphrase is empty".into()));
    }
    Ok(p)
}
