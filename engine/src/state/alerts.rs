//! Alert deliveries: one record per message flowctl owes someone, in the store's `alerts` tree.
//!
//! A record is created (durably, and only if it does not exist yet) *before* the message is sent,
//! keyed by what the message is about: DAG, run, task, try, event and channel. So a run resumed
//! after a restart, or an observer that sees the same event twice, never sends a second message:
//! the second claim finds the record and stops. The price is at-most-once: a process killed
//! between the claim and the send leaves a `pending` record and no message.
//!
//! Layout: dag 0 run 0 task 0 try (4 big-endian bytes) 0 event 0 channel -> [`AlertDelivery`] as
//! JSON. Run events have an empty task and try 0, so they sort first within their run.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::store::{Store, StoreError};
use crate::dag::AlertEvent;

/// The store tree that holds deliveries.
pub const ALERTS_TREE: &str = "alerts";

/// Where a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Claimed; being sent or waiting for its next try.
    Pending,
    /// The server or receiver accepted it.
    Delivered,
    /// Every try failed, or the failure was final.
    Failed,
}

impl DeliveryState {
    /// The name `status` shows.
    pub fn name(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }
}

/// How a message travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Channel {
    /// One email to every recipient.
    Email {
        /// The recipients.
        to: Vec<String>,
    },
    /// One POST to a URL.
    Webhook {
        /// The URL.
        url: String,
    },
}

impl Channel {
    /// The channel's part of the record key: an event sends one email, and one POST per URL.
    fn key(&self) -> String {
        match self {
            Channel::Email { .. } => "email".into(),
            Channel::Webhook { url } => format!("webhook {url}"),
        }
    }

    /// A short description for people: `email to a@x, b@y` or `webhook https://host/…` (a
    /// webhook URL's path is often its secret, so it is not shown).
    pub fn describe(&self) -> String {
        match self {
            Channel::Email { to } if to.is_empty() => "email (no recipients)".into(),
            Channel::Email { to } => format!("email to {}", to.join(", ")),
            Channel::Webhook { url } => {
                let origin_end = url.find("://").map(|i| i + 3).and_then(|s| url[s..].find('/').map(|j| s + j));
                match origin_end {
                    Some(end) if end + 1 < url.len() => format!("webhook {}/…", &url[..end]),
                    _ => format!("webhook {url}"),
                }
            }
        }
    }
}

/// One message flowctl owes, and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlertDelivery {
    /// The DAG.
    pub dag_id: String,
    /// The run.
    pub run_id: String,
    /// The task, for task events; `None` for run events.
    pub task_id: Option<String>,
    /// The attempt the event is about; 0 for run events.
    pub try_number: u32,
    /// What happened.
    pub event: AlertEvent,
    /// How the message travels.
    pub channel: Channel,
    /// Where it is.
    pub state: DeliveryState,
    /// Tries made so far.
    pub tries: u32,
    /// Why the last try failed (secrets masked).
    pub last_error: Option<String>,
    /// When it was claimed.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl AlertDelivery {
    /// A new pending delivery.
    pub fn new(dag_id: &str, run_id: &str, task: Option<(&str, u32)>, event: AlertEvent, channel: Channel) -> Self {
        let now = Utc::now();
        AlertDelivery {
            dag_id: dag_id.to_string(),
            run_id: run_id.to_string(),
            task_id: task.map(|(t, _)| t.to_string()),
            try_number: task.map_or(0, |(_, n)| n),
            event,
            channel,
            state: DeliveryState::Pending,
            tries: 0,
            last_error: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// The record's key.
    pub fn key(&self) -> Vec<u8> {
        let event = AlertEvent::ALL.iter().find(|(e, _)| *e == self.event).map_or("", |(_, n)| n);
        [
            &run_prefix(&self.dag_id, &self.run_id)[..],
            self.task_id.as_deref().unwrap_or("").as_bytes(),
            b"\0",
            &self.try_number.to_be_bytes(),
            b"\0",
            event.as_bytes(),
            b"\0",
            self.channel.key().as_bytes(),
        ]
        .concat()
    }

    /// What the message is about, for people: `failure of task load (try 2)` or `run_failure`.
    pub fn describe_event(&self) -> String {
        let event = AlertEvent::ALL.iter().find(|(e, _)| *e == self.event).map_or("", |(_, n)| n);
        match &self.task_id {
            Some(task) => format!("{event} of task {task} (try {})", self.try_number),
            None => event.to_string(),
        }
    }
}

fn run_prefix(dag_id: &str, run_id: &str) -> Vec<u8> {
    [dag_id.as_bytes(), b"\0", run_id.as_bytes(), b"\0"].concat()
}

/// The deliveries of a store.
#[derive(Clone)]
pub struct AlertStore {
    store: Store,
    tree: sled::Tree,
}

fn sled_error(source: sled::Error) -> StoreError {
    StoreError::Sled { path: format!("(tree \"{ALERTS_TREE}\")"), source }
}

fn decode(key: &[u8], bytes: &[u8]) -> Result<AlertDelivery, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: format!("alert delivery {}", String::from_utf8_lossy(key).replace('\0', "/")),
        message: e.to_string(),
    })
}

impl AlertStore {
    /// The deliveries kept in `store`.
    pub fn open(store: &Store) -> Result<AlertStore, StoreError> {
        Ok(AlertStore { tree: store.tree(ALERTS_TREE)?, store: store.clone() })
    }

    /// Records `delivery` durably if no delivery with its key exists. Returns false (and writes
    /// nothing) when one does: the message was already sent, or is being sent.
    pub fn claim(&self, delivery: &AlertDelivery) -> Result<bool, StoreError> {
        let value = serde_json::to_vec(delivery).unwrap_or_default();
        let swapped = self.tree.compare_and_swap(delivery.key(), None as Option<&[u8]>, Some(value)).map_err(sled_error)?;
        if swapped.is_err() {
            return Ok(false);
        }
        self.store.flush()?;
        Ok(true)
    }

    /// Replaces a delivery's record, durably.
    pub fn put(&self, delivery: &AlertDelivery) -> Result<(), StoreError> {
        let value = serde_json::to_vec(delivery).unwrap_or_default();
        self.tree.insert(delivery.key(), value).map_err(sled_error)?;
        self.store.flush()
    }

    /// The deliveries of one run, run events first, then by task, try, event and channel. An
    /// unreadable one is reported and skipped, as the store's listings do, so it never hides the
    /// run from `status`.
    pub fn for_run(&self, dag_id: &str, run_id: &str) -> Result<Vec<AlertDelivery>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(run_prefix(dag_id, run_id)) {
            let (key, value) = item.map_err(sled_error)?;
            match decode(&key, &value) {
                Ok(delivery) => out.push(delivery),
                Err(e) => self.store.skip_unreadable(&e),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_is_claimed_once_even_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let email = Channel::Email { to: vec!["a@example.com".into()] };
        let first = AlertDelivery::new("d", "r", Some(("load", 1)), AlertEvent::Retry, email.clone());
        {
            let store = Store::open(dir.path()).unwrap();
            let alerts = AlertStore::open(&store).unwrap();
            assert!(alerts.claim(&first).unwrap());
            assert!(!alerts.claim(&first).unwrap(), "a second claim of the same event must fail");
            // Another try, event or channel is another message.
            let second_try = AlertDelivery::new("d", "r", Some(("load", 2)), AlertEvent::Retry, email.clone());
            let failure = AlertDelivery::new("d", "r", Some(("load", 1)), AlertEvent::Failure, email.clone());
            let hook = Channel::Webhook { url: "http://127.0.0.1:1/x".into() };
            let webhook = AlertDelivery::new("d", "r", Some(("load", 1)), AlertEvent::Retry, hook);
            let run = AlertDelivery::new("d", "r", None, AlertEvent::RunFailure, email.clone());
            for other in [&second_try, &failure, &webhook, &run] {
                assert!(alerts.claim(other).unwrap(), "{other:?}");
            }
            let mut done = first.clone();
            done.state = DeliveryState::Delivered;
            done.tries = 1;
            alerts.put(&done).unwrap();
        }
        let store = crate::state::store::tests::reopen(dir.path());
        let alerts = AlertStore::open(&store).unwrap();
        assert!(!alerts.claim(&first).unwrap(), "a restart must not send the message again");
        let records = alerts.for_run("d", "r").unwrap();
        assert_eq!(records.len(), 5);
        assert_eq!(records[0].task_id, None, "run events first");
        assert_eq!(records.iter().find(|r| r.key() == first.key()).unwrap().state, DeliveryState::Delivered);
        assert!(alerts.for_run("d", "r2").unwrap().is_empty());
    }

    #[test]
    fn webhook_paths_are_not_shown() {
        let hook = Channel::Webhook { url: "https://hooks.slack.com/services/T0/B0/secret".into() };
        assert_eq!(hook.describe(), "webhook https://hooks.slack.com/…");
        assert_eq!(Channel::Webhook { url: "http://127.0.0.1:9".into() }.describe(), "webhook http://127.0.0.1:9");
    }
}
