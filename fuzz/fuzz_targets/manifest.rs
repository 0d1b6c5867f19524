#![no_main]
//! Manifest nodes: decoding never panics, and what decodes re-encodes to the same bytes.
use libfuzzer_sys::fuzz_target;
use revfs::format::ManifestNode;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = ManifestNode::decode(data) {
        assert_eq!(m.encode(), data);
        let _ = (m.len(), m.data());
    }
});
