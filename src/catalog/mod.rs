//! The catalog: everything revfs keeps in its LSM tree (fjall): the live
//! tree, versions, commits, the object index. All its calls live in `db`;
//! `legacy` moves the sled catalog of a store of format 9 or older into it;
//! `watermark` refuses a catalog whose journal rolled back; `contain` turns
//! fjall's asserts on damaged bytes into errors.

mod contain;

pub mod db;
pub mod legacy;
pub mod watermark;
