//! `revfs log PATH [--json]`.

use super::{decode, in_mount};
use revfs::control::{self, Request};
use revfs::engine::history::LogEntry;
use revfs::{Error, Result};

/// `revfs log PATH`: every version of a live file, with a restorable path.
pub fn run(path: &std::path::Path, json: bool) -> Result<()> {
    let (root, store, rel) = in_mount(path)?;
    let req = Request::Log { path: rel };
    let entries: Vec<LogEntry> = decode(control::request(&store, req)?)?;
    if entries.is_empty() {
        return Err(Error::Store(format!(
            "{}: no recorded versions yet (commits happen every second)",
            path.display()
        )));
    }
    let rows: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            serde_json::json!({
                "version": e.version,
                "time": e.time,
                "size": e.size,
                "commit": e.commit,
                "path": root.join(&e.snapshot_path),
            })
        })
        .collect();
    if json {
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    println!("{:>7}  {:<36} {:>14}  path", "version", "time", "size");
    for (e, r) in entries.iter().zip(&rows) {
        let p = r["path"].as_str().unwrap_or("");
        println!("{:>7}  {:<36} {:>14}  {p}", e.version, e.time, e.size);
    }
    Ok(())
}
