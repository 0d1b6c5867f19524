#![no_main]
//! Commit objects.
use libfuzzer_sys::fuzz_target;
use revfs::format::Commit;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Commit::decode(data) {
        assert_eq!(Commit::decode(&c.encode()).ok(), Some(c));
    }
});
