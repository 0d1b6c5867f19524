#![no_main]
//! Values of the sled catalog: inode, version, object index entry, directory entry.
use libfuzzer_sys::fuzz_target;
use revfs::catalog::db::{Inode, IndexEntry, Version, decode_dentry};

fuzz_target!(|data: &[u8]| {
    let Some((which, rest)) = data.split_first() else { return };
    match which % 4 {
        0 => drop(Inode::decode(rest)),
        1 => drop(Version::decode(rest)),
        2 => drop(IndexEntry::decode(rest)),
        _ => drop(decode_dentry(rest)),
    }
});
