#![no_main]
//! Small files of a store and a replica: revfs.conf, replica head and name files.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((which, rest)) = data.split_first() else { return };
    let dir = tempfile::tempdir().unwrap();
    match which % 3 {
        0 => {
            std::fs::write(dir.path().join("revfs.conf"), rest).unwrap();
            let _ = revfs::repo::Config::read(dir.path());
        }
        1 => {
            std::fs::create_dir(dir.path().join("heads")).unwrap();
            std::fs::write(dir.path().join("heads/0000000000000001.head"), rest).unwrap();
            let _ = revfs::replica::read_head(dir.path());
        }
        _ => {
            std::fs::create_dir(dir.path().join("names")).unwrap();
            std::fs::write(dir.path().join("names/61.name"), rest).unwrap();
            let _ = revfs::replica::read_names(dir.path());
        }
    }
});
