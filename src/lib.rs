//! revfs: a FUSE filesystem that keeps every version of every file as
//! deduplicated, compressed, content-addressed chunks.
//!
//! Layers, bottom up: `format` (bytes on disk), `store` (objects in packs),
//! `manifest` (a file's content as a tree of extents), `dirtree` (a
//! directory's listing, in pieces when big),
//! `crypto` (keys, sealed records, key slots),
//! `catalog` (fjall: live tree, versions, commits, object index), `engine`
//! (POSIX semantics and the commit protocol), `reach` (what references
//! what) and `retention` (policies, prune), `fs` (the FUSE adapter),
//! `replica` (targets, the replicator, recover, bucket mounts: it uses the
//! engine, which knows replicas only as `engine::ReplicaLink`), `config` +
//! `repo` (a store directory, opened as a whole), `daemon` + `control` (a
//! mounted store and its control socket).
#![deny(unsafe_op_in_unsafe_fn)]

pub mod catalog;
pub mod chunker;
pub mod config;
pub mod control;
pub mod crashpoint;
pub mod crypto;
pub mod daemon;
pub mod dirtree;
pub mod drill;
pub mod engine;
pub mod error;
pub mod format;
pub mod fs;
pub mod ids;
pub mod manifest;
pub mod metrics;
pub mod reach;
pub mod replica;
pub mod repo;
pub mod retention;
pub mod scrub;
pub mod status;
pub mod store;
pub mod sys;
pub mod testclock;
pub mod timefmt;
pub mod verify;

pub use error::{Error, Result};
