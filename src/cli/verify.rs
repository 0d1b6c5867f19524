//! `revfs verify STORE [--replica DIR] [--repair] [--json]`.

use revfs::control::{self, Request};
use revfs::engine::Options;
use revfs::{Error, Result, repo};
use std::path::PathBuf;

pub fn run(store: PathBuf, replica: Option<PathBuf>, repair: bool, json: bool) -> Result<()> {
    let replica = replica
        .map(|r| revfs::config::absolute_spec(&r))
        .transpose()?;
    let req = Request::Verify { replica, repair };
    // Offline, verify runs here and can show progress; mounted, the daemon runs it.
    let value = match control::call(&store, &req)? {
        Some(v) => v,
        None => {
            let Request::Verify { replica, repair } = req else {
                unreachable!()
            };
            let r = repo::Repo::open(
                &store,
                Options {
                    read_only: !repair,
                    ..Options::default()
                },
            )?;
            let bar = super::byte_bar("verifying");
            let report = revfs::verify::verify(&r.engine, replica.as_deref(), repair, |d, t| {
                bar.set_length(t);
                bar.set_position(d);
            })?;
            bar.finish_and_clear();
            r.engine.shutdown()?;
            serde_json::to_value(report).map_err(|e| Error::Store(e.to_string()))?
        }
    };
    let clean = value["clean"].as_bool().unwrap_or(false);
    if json {
        println!("{value:#}");
    } else {
        for (side, v) in [
            ("primary", &value["primary"]),
            ("replica", &value["replica"]),
        ] {
            if v.is_null() {
                continue;
            }
            println!(
                "{side}: {} objects checked, {} corrupt, {} missing, {} repaired",
                v["objects_checked"],
                v["corrupt"].as_array().map_or(0, Vec::len),
                v["missing"].as_array().map_or(0, Vec::len),
                v["repaired"]
            );
            for p in v["corrupt"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(v["missing"].as_array().into_iter().flatten())
            {
                println!("  {}", p.as_str().unwrap_or(""));
            }
        }
        println!("{}", if clean { "clean" } else { "NOT clean" });
    }
    if clean {
        Ok(())
    } else {
        Err(Error::Store("verify found problems (see above)".into()))
    }
}
