//! `revfs key list|add|remove|passwd STORE`: the passphrases (key slots)
//! of an encrypted store. A change goes to the store's key file at once
//! (also while it is mounted) and to its replica at the next round.

use revfs::crypto::{passphrase, slots::KeyFile};
use revfs::{Error, Result, repo};
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand)]
pub enum KeyCmd {
    /// List the key slots (no passphrase needed).
    List {
        store: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Add a passphrase (asks for a current one, then the new one).
    Add { store: PathBuf },
    /// Remove key slot ID (asks for a passphrase; the last slot stays).
    Remove { store: PathBuf, id: u32 },
    /// Change the passphrase of the slot the current one opens.
    Passwd { store: PathBuf },
}

/// The store directory and its key file; refuses plain stores and replicas.
fn open(target: &Path) -> Result<(PathBuf, KeyFile)> {
    let store = repo::resolve_store(target)?;
    let (_, cfg) = repo::Config::read(&store)?;
    if cfg.cipher.is_none() {
        return Err(Error::Store(format!(
            "{}: store is not encrypted (it has no keys)",
            store.display()
        )));
    }
    if cfg.role.as_deref() == Some(revfs::replica::ROLE_REPLICA) {
        return Err(Error::Store(format!(
            "{}: is a replica: change the keys on its primary (they reach it by replication)",
            store.display()
        )));
    }
    let keys = KeyFile::read(&store)?;
    Ok((store, keys))
}

pub fn run(cmd: KeyCmd) -> Result<()> {
    match cmd {
        KeyCmd::List { store, json } => {
            let (_, keys) = open(&store)?;
            if json {
                let slots: Vec<_> = keys
                    .slots
                    .iter()
                    .map(|s| {
                        serde_json::json!({"id": s.id, "created": s.created, "kdf": s.kdf,
                            "m_kib": s.m_kib, "t_cost": s.t_cost, "p_cost": s.p_cost})
                    })
                    .collect();
                println!("{:#}", serde_json::json!({ "slots": slots }));
            } else {
                println!("slot  created                         kdf");
                for s in &keys.slots {
                    println!(
                        "{:>4}  {:<30}  {} m={} MiB t={} p={}",
                        s.id,
                        s.created,
                        s.kdf,
                        s.m_kib >> 10,
                        s.t_cost,
                        s.p_cost
                    );
                }
            }
        }
        KeyCmd::Add { store } => {
            let (store, mut keys) = open(&store)?;
            let (master, _) = keys.unlock(passphrase::current(&store)?.as_bytes(), &store)?;
            let new = passphrase::new(&store, false)?;
            let id = keys.add(&master, new.as_bytes())?;
            keys.write(&store)?;
            println!("added key slot {id}");
        }
        KeyCmd::Remove { store, id } => {
            let (store, mut keys) = open(&store)?;
            keys.unlock(passphrase::current(&store)?.as_bytes(), &store)?;
            keys.remove(id)?;
            keys.write(&store)?;
            println!("removed key slot {id}");
        }
        KeyCmd::Passwd { store } => {
            let (store, mut keys) = open(&store)?;
            let (master, id) = keys.unlock(passphrase::current(&store)?.as_bytes(), &store)?;
            let new = passphrase::new(&store, false)?;
            keys.rewrap(id, &master, new.as_bytes())?;
            keys.write(&store)?;
            println!("changed the passphrase of key slot {id}");
        }
    }
    Ok(())
}
