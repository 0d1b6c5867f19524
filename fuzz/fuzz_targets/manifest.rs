#![no_main]
//! Manifest objects: decoding never panics, and what decodes re-encodes to the same bytes.
use libfuzzer_sys::fuzz_target;
use revfs::format::Manifest;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::decode(data) {
        assert_eq!(m.encode(), data);
        let _ = m.size();
    }
});
