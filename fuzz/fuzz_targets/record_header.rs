#![no_main]
//! Pack record headers and the magic/version prefix of every persistent file.
use libfuzzer_sys::fuzz_target;
use revfs::format::{CONF_MAGIC, PACK_MAGIC, RecordHeader, check_magic};

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = RecordHeader::decode(data) {
        assert_eq!(RecordHeader::decode(&h.encode()).ok(), Some(h));
    }
    let _ = check_magic(data, PACK_MAGIC, "pack");
    let _ = check_magic(data, CONF_MAGIC, "config");
});
