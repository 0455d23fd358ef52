//! Durable state: the home folder, its lock, and the sled store of DAG versions, runs and task
//! instances, and the alert deliveries (`alerts.rs`, a tree of their own).
//!
//! Invariant: every state change is flushed to disk before the engine acts on it. The executor
//! writes a task as running (and flushes) before the attempt starts, so a crash can never leave a
//! task that did start recorded as not started.

mod home;
mod model;
mod store;
mod alerts;

pub use home::{attempt_log_path, is_alive, Home, HomeError};
pub use model::{DagRecord, DagRun, DagVersion, LatestVersion, RunState, TaskInstance, Trigger};
pub use store::{RunFilter, RunPosition, Store, StoreError, VersionAdded, Write};
pub use alerts::{AlertDelivery, AlertStore, Channel, DeliveryState, ALERTS_TREE};
