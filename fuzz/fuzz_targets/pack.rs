#![no_main]
//! A whole pack file: scanning its records and reading each one back
//! (hash-checked) must never panic, whatever the bytes.
use libfuzzer_sys::fuzz_target;
use revfs::catalog::db::IndexEntry;
use revfs::ids::PackNo;
use revfs::store::pack::{PackReader, pack_path};
use revfs::store::read_record;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let path = pack_path(dir.path(), PackNo(1));
    std::fs::write(&path, data).unwrap();
    let Ok(reader) = PackReader::open(dir.path(), PackNo(1)) else { return };
    let Ok(records) = reader.scan() else { return };
    for (h, offset) in records {
        let e = IndexEntry::of_record(PackNo(1), offset, &h);
        let _ = read_record(&reader, &path, &h.id, &e);
    }
});
