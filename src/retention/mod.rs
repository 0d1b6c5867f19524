//! Retention: which history a store keeps (`policy`), and giving the
//! space of the rest back while mounted (`prune`); the capacity plan that
//! `status` shows is `plan`; which old chunks a recompressing prune
//! stores as deltas of newer ones is `deltas`; freeing the chunks only
//! deltas still name is `rebase`.

pub mod deltas;
pub mod plan;
pub mod policy;
pub mod prune;
pub mod rebase;

pub use policy::{Policy, SizeBound};
pub use prune::{PruneOptions, PruneReport, prune};
