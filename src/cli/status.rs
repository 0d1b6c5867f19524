//! `revfs status STORE [--json]`.

use super::decode;
use revfs::Result;
use revfs::control::{self, Request};
use std::path::Path;

pub fn run(store: &Path, json: bool) -> Result<()> {
    let value = control::request(store, Request::Status)?;
    if json {
        println!("{value:#}");
    } else {
        let s: revfs::status::Status = decode(value)?;
        print!("{s}");
    }
    Ok(())
}
