//! `revfs drill STORE [--full] [--sample N] [--replica DIR] [--scratch DIR] [--json]`.

use revfs::{Error, Result};
use std::path::PathBuf;

pub fn run(
    store: PathBuf,
    full: bool,
    sample: usize,
    replica: Option<PathBuf>,
    scratch: Option<PathBuf>,
    json: bool,
) -> Result<()> {
    let bar = super::bar("drill", "{msg} [{bar:40}] {percent}% {eta}");
    let mut step = "";
    let r = revfs::drill::drill(&store, replica, full, sample, scratch, &mut |s, d, t| {
        if s != step {
            step = s;
            bar.set_message(s);
        }
        bar.set_length(t);
        bar.set_position(d);
    });
    bar.finish_and_clear();
    let r = r?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&r).map_err(|e| Error::Store(e.to_string()))?
        );
    } else {
        println!("replica:          {}", r.replica.display());
        println!(
            "compared:         {} of {} versions, {:.1} MiB{}",
            r.sampled,
            r.versions_in_replica,
            r.bytes_compared as f64 / (1 << 20) as f64,
            if r.pruned_on_primary > 0 {
                format!(
                    " ({} pruned on the primary, kept by the replica's grace window)",
                    r.pruned_on_primary
                )
            } else {
                String::new()
            }
        );
        println!(
            "RPO (lag):        {} commits, {:.1} MiB, {:.1} s ({})",
            r.rpo.lag_commits,
            r.rpo.lag_bytes as f64 / (1 << 20) as f64,
            r.rpo.lag_seconds,
            r.rpo.state
        );
        println!(
            "recovered:        {} commits (head {}), {} objects, verify {}",
            r.recovered.commits,
            r.recovered.head,
            r.recovered.objects,
            if r.recovered_clean {
                "clean"
            } else {
                "NOT clean"
            }
        );
        println!("RTO recover:      {:.2} s", r.rto_recover_seconds);
        println!("RTO first byte:   {:.2} s", r.rto_first_byte_seconds);
        println!("RTO whole sample: {:.2} s", r.rto_sample_seconds);
        for m in &r.mismatches {
            println!("MISMATCH {m}");
        }
        println!(
            "{}",
            if r.passed {
                "drill passed"
            } else {
                "DRILL FAILED"
            }
        );
    }
    if r.passed {
        Ok(())
    } else {
        Err(Error::Store(
            "drill failed: the replica does not give back what the primary holds".into(),
        ))
    }
}
