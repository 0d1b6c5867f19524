//! Retention: which history a store keeps (`policy`), and giving the
//! space of the rest back while mounted (`prune`); the capacity plan that
//! `status` shows is `plan`; which old chunks a recompressing prune
//! stores as deltas of newer ones is `deltas`.

pub mod deltas;
pub mod plan;
pub mod policy;
pub mod prune;

pub use policy::{Policy, SizeBound};
pub use prune::{PruneOptions, PruneReport, prune};
