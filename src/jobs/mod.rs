//! The background work of a worker process: the worker that re-fetches queued codes
//! (`worker`), catch-up from Seam's event log (`catch_up`), the import of every
//! device's codes (`import`), sweeps of the mirror (`sweep`) and pruning (`prune`),
//! the periodic ones on one loop (`periodic`), all restarted when they fail
//! (`supervisor`); and backup access code pulls (`backup`).

pub mod backup;
pub mod catch_up;
pub mod import;
pub mod periodic;
pub mod prune;
pub mod supervisor;
pub mod sweep;
pub mod worker;
