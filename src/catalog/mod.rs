//! The catalog: everything revfs keeps in sled (the live tree, versions,
//! commits, the object index). All sled calls live in `db`.

pub mod db;
