//! The control channel of a mounted store. A store admits one process (its lock), so
//! while a store is mounted, CLI commands that need it (status, and later
//! log, snapshot, verify) ask the daemon over a Unix socket in the store:
//! one JSON request line, one JSON response line.
//!
//! Requests: `{"cmd": "status"}`, `{"cmd": "commit"}`,
//! `{"cmd": "snapshot_create", "name": N}`, `{"cmd": "snapshot_delete", "name": N}`,
//! `{"cmd": "snapshot_list"}`, `{"cmd": "log", "path": "relative/path"}`,
//! `{"cmd": "checkpoints"}`, `{"cmd": "checkpoint_pin", "name": N}`,
//! `{"cmd": "checkpoint_unpin", "name": N}`,
//! `{"cmd": "verify", "replica": P, "repair": B}`,
//! `{"cmd": "restore", "path": P, "at": TIME_OR_NAME, "to": P}`,
//! `{"cmd": "prune", "policy": {...}, "dry_run": B}`.
//! Response: `{"ok": <value>}` or `{"error": "<one line>"}`.
//!
//! [`request`] sends a request to the daemon when one serves the store and
//! otherwise opens the store itself and answers the same way.

use crate::engine::Engine;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Status,
    Commit,
    SnapshotCreate {
        name: String,
    },
    SnapshotDelete {
        name: String,
    },
    SnapshotList,
    Checkpoints,
    CheckpointPin {
        name: String,
    },
    CheckpointUnpin {
        name: String,
    },
    Log {
        path: String,
    },
    Verify {
        replica: Option<std::path::PathBuf>,
        repair: bool,
    },
    Restore {
        path: String,
        /// RFC 3339 instant, or a snapshot name.
        at: String,
        to: Option<String>,
    },
    Prune {
        policy: crate::retention::Policy,
        dry_run: bool,
        #[serde(default)]
        recompress: bool,
        #[serde(default)]
        no_deltas: bool,
    },
}

impl Request {
    /// Whether answering needs a writable store.
    fn writes(&self) -> bool {
        matches!(
            self,
            Request::Commit
                | Request::SnapshotCreate { .. }
                | Request::SnapshotDelete { .. }
                | Request::CheckpointPin { .. }
                | Request::CheckpointUnpin { .. }
                | Request::Verify { repair: true, .. }
                | Request::Restore { .. }
                | Request::Prune { dry_run: false, .. }
        )
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Ok(Value),
    Error(String),
}

fn json(v: impl Serialize) -> Result<Value> {
    serde_json::to_value(v).map_err(|e| Error::Store(e.to_string()))
}

fn handle(engine: &Engine, req: Request) -> Result<Value> {
    match req {
        Request::Status => json(crate::status::status(engine)?),
        Request::Commit => json(engine.commit(true)?.map(|c| c.0)),
        Request::SnapshotCreate { name } => json(engine.snapshot_create(&name)?.0),
        Request::SnapshotDelete { name } => json(engine.snapshot_delete(&name)?),
        Request::SnapshotList => json(engine.snapshot_list(&engine.options().thinning)?),
        Request::Checkpoints => json(engine.checkpoints()?),
        Request::CheckpointPin { name } => json(engine.checkpoint_pin(&name)?.0),
        Request::CheckpointUnpin { name } => json(engine.checkpoint_unpin(&name)?),
        Request::Log { path } => {
            // Versions recorded since the last commit are listed too: commit
            // them now so that their snapshot paths exist.
            engine.commit(false)?;
            json(engine.log(&path)?)
        }
        Request::Restore { path, at, to } => {
            let t = engine.instant_of(&at)?;
            json(engine.restore(&path, t, to.as_deref())?)
        }
        Request::Prune {
            policy,
            dry_run,
            recompress,
            no_deltas,
        } => json(crate::retention::prune(
            engine,
            &crate::retention::PruneOptions {
                policy,
                dry_run,
                only_if_dropping: false,
                recompress,
                no_deltas,
                recode_rate: None,
            },
            &mut |_, _| {},
        )?),
        Request::Verify { replica, repair } => json(crate::verify::verify(
            engine,
            replica.as_deref(),
            repair,
            |_, _| {},
        )?),
    }
}

/// Answers `req` for `store`: through its daemon when it is mounted,
/// otherwise by opening the store in this process.
pub fn request(store: &Path, req: Request) -> Result<Value> {
    if let Some(v) = call(store, &req)? {
        return Ok(v);
    }
    let opts = crate::engine::Options {
        read_only: !req.writes(),
        ..Default::default()
    };
    let repo = crate::repo::Repo::open(store, opts)?;
    let v = handle(&repo.engine, req)?;
    repo.engine.shutdown()?;
    Ok(v)
}

/// Serves requests until the listener's socket file is removed.
pub struct Server {
    path: PathBuf,
}

impl Server {
    pub fn start(path: &Path, engine: Arc<Engine>) -> Result<Server> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).map_err(Error::io_at(path))?;
        std::thread::Builder::new()
            .name("revfs-control".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    let Ok(conn) = conn else { continue };
                    let engine = engine.clone();
                    std::thread::spawn(move || serve_one(conn, &engine));
                }
            })
            .map_err(Error::Io)?;
        Ok(Server {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve_one(conn: UnixStream, engine: &Engine) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut line = String::new();
    let mut reader = BufReader::new(&conn);
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let resp = match serde_json::from_str::<Request>(&line) {
        Err(e) => Response::Error(format!("bad request: {e}")),
        Ok(req) => match handle(engine, req) {
            Ok(v) => Response::Ok(v),
            Err(e) => Response::Error(e.to_string()),
        },
    };
    let mut out = serde_json::to_vec(&resp).unwrap_or_default();
    out.push(b'\n');
    let _ = (&conn).write_all(&out);
}

/// Sends one request to the daemon serving `store`; `Ok(None)` when no
/// daemon is listening.
pub fn call(store: &Path, req: &Request) -> Result<Option<Value>> {
    let path = crate::repo::runtime_dir(store)?.join(crate::repo::SOCKET_FILE);
    let conn = match UnixStream::connect(&path) {
        Ok(c) => c,
        Err(_) => return Ok(None),
    };
    // Prune and verify walk the whole store; the rest answer at once.
    let wait = match req {
        Request::Prune { .. } | Request::Verify { .. } => 24 * 3600,
        _ => 120,
    };
    conn.set_read_timeout(Some(Duration::from_secs(wait)))?;
    let mut out = serde_json::to_vec(req).map_err(|e| Error::Store(e.to_string()))?;
    out.push(b'\n');
    (&conn).write_all(&out)?;
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line)?;
    match serde_json::from_str::<Response>(&line) {
        Ok(Response::Ok(v)) => Ok(Some(v)),
        Ok(Response::Error(e)) => Err(Error::Store(e)),
        Err(e) => Err(Error::Store(format!("bad answer from the daemon: {e}"))),
    }
}
