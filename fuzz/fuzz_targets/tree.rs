#![no_main]
//! Tree objects (directory entries with their nodes).
use libfuzzer_sys::fuzz_target;
use revfs::format::Tree;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = Tree::decode(data) {
        assert_eq!(Tree::decode(&t.encode()).ok(), Some(t));
    }
});
