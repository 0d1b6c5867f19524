//! `revfs restore PATH --at TIME [--to DEST] [--json]`.

use super::{decode, in_mount};
use revfs::control::{self, Request};
use revfs::{Error, Result};

/// `revfs restore PATH --at TIME [--to DEST]`.
pub fn run(
    path: &std::path::Path,
    at: &str,
    to: Option<&std::path::Path>,
    json: bool,
) -> Result<()> {
    let (root, store, rel) = in_mount(path)?;
    let to = match to {
        None => None,
        Some(dest) => {
            let abs = std::path::absolute(dest).map_err(Error::Io)?;
            let rel = abs.strip_prefix(&root).map_err(|_| {
                Error::Store(format!(
                    "{}: --to must be inside the same mount ({})",
                    dest.display(),
                    root.display()
                ))
            })?;
            Some(rel.to_string_lossy().into_owned())
        }
    };
    let req = Request::Restore {
        path: rel,
        at: at.to_string(),
        to,
    };
    let value = control::call(&store, &req)?.ok_or_else(|| {
        Error::Store(format!(
            "{}: no daemon answers for this mount",
            store.display()
        ))
    })?;
    if json {
        println!("{value:#}");
        return Ok(());
    }
    let r: revfs::engine::restore::Restored = decode(value)?;
    println!(
        "restored {} as of {} (commit {}): {} files ({:.1} MiB), {} directories, {} other, \
         {} removed; now commit {}",
        path.display(),
        r.from_time,
        r.from_commit,
        r.files,
        r.bytes as f64 / (1 << 20) as f64,
        r.dirs,
        r.others,
        r.removed,
        r.commit
    );
    Ok(())
}
