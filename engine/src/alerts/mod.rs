//! Alerts: email and webhook messages when tasks and runs fail (or retry, or succeed), as a DAG's
//! `alerts:` section asks.
//!
//! Nobody watches a quarterly job, so a failure must reach a person; but an alert must never
//! fail or delay the run it reports on. So alerts hang off the executor's progress events
//! (nothing in the run loop knows about them) and are sent from a thread of their own, with their
//! own records in the store.
//!
//! Read in this order: [`message`] (what a message says, in each shape), [`email`] (one email
//! through the SMTP server, with errors that say which step failed), [`webhook`] (one POST),
//! [`dispatch`] (events to deliveries: dedup, retries, the bounded wait at exit).
//!
//! Architecture invariant: alerts never fail or delay a run. The observer the executor calls only
//! queues; every network call, file read and store write of an alert happens on the alert thread.

pub mod message;
pub mod email;
pub mod webhook;
pub mod dispatch;

pub use dispatch::{task_alerts, AlertDispatcher, RunObserver, Summary, SyncLogs, FINISH_BOUND};
pub use email::{SendError, Smtp};
pub use message::AlertFacts;
