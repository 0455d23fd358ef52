//! The dispatcher: turns the executor's progress events into alert deliveries and sends them on
//! a thread of its own, so an alert never fails or delays a run.
//!
//! The executor calls its observers on the run loop's thread; [`RunObserver::observe`] only
//! decides which channels an event concerns and queues one job per channel (an unbounded channel
//! send, no I/O). The worker thread runs its own tokio runtime: for each job it claims the
//! delivery in the store (so an event is sent once, even after a restart), gathers the facts
//! (syncing the attempt logs first, then reading the log's tail), and sends, three tries with
//! backoff. [`AlertDispatcher::finish`] waits, bounded, for what is still in flight, and marks
//! what did not make it as failed, so `flowctl status` tells the truth.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::email::{mailboxes, SendError, Smtp};
use super::message::{log_tail, run_url, AlertFacts, TaskFacts, TaskLine};
use super::webhook::Webhooks;
use crate::config::Config;
use crate::dag::{AlertEvent, Dag, EmailAlert, Task, WebhookAlert, WebhookFormat};
use crate::executor::Progress;
use crate::lifecycle::TaskState;
use crate::secrets::Masker;
use crate::state::{attempt_log_path, AlertDelivery, AlertStore, Channel, DagRun, DeliveryState, RunState, Store, StoreError};

/// Tries per delivery.
pub const TRIES: u32 = 3;

/// The wait before the second try; it doubles for each try after.
pub const FIRST_RETRY_DELAY: Duration = Duration::from_secs(1);

/// How long `flowctl run` waits at most for its alerts after the run ends.
pub const FINISH_BOUND: Duration = Duration::from_secs(10);

/// A function that waits until attempt logs queued so far are on disk
/// ([`crate::executor::Executor::sync_logs`]).
pub type SyncLogs = Arc<dyn Fn() + Send + Sync>;

/// What became of the deliveries a dispatcher handled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Accepted by the server or receiver.
    pub delivered: usize,
    /// Given up on.
    pub failed: usize,
}

/// Sends alerts for any number of runs; shared by `flowctl run` and (later) the server.
#[derive(Clone)]
pub struct AlertDispatcher {
    shared: Arc<Shared>,
}

struct Shared {
    config: Config,
    /// The SMTP server, or why there is none.
    smtp: Result<Smtp, SendError>,
    store: Store,
    records: AlertStore,
    logs_dir: PathBuf,
    masker: Masker,
    notice: Box<dyn Fn(&str) + Send + Sync>,
    said: Mutex<HashSet<String>>,
    /// The worker's queue: `None` before the first job, and again after `finish`, when
    /// `finished` is set.
    worker: Mutex<Option<mpsc::UnboundedSender<Msg>>>,
    finished: std::sync::atomic::AtomicBool,
    delivered: AtomicUsize,
    failed: AtomicUsize,
}

enum Msg {
    Deliver(Box<Job>),
    Finish { deadline: Instant, done: std::sync::mpsc::Sender<()> },
}

/// One delivery to make.
struct Job {
    delivery: AlertDelivery,
    dag: Arc<Dag>,
    logical_date: DateTime<Utc>,
    format: WebhookFormat,
    /// For task events: how long the attempt ran, and its error.
    duration: Option<Duration>,
    error: Option<String>,
    sync_logs: SyncLogs,
}

impl AlertDispatcher {
    /// A dispatcher sending through `config`'s SMTP server, recording deliveries in `store`,
    /// reading attempt logs under `logs_dir`. The SMTP password (from the environment variable
    /// `password_env` names) is added to `masker` here, before anything could print it: create
    /// the dispatcher before the executor, which copies the masker's secrets for its operators.
    /// Problems worth a person's attention go to `notice` (stderr for `flowctl run`).
    pub fn new(
        config: Config,
        store: &Store,
        logs_dir: PathBuf,
        masker: Masker,
        notice: impl Fn(&str) + Send + Sync + 'static,
    ) -> Result<AlertDispatcher, StoreError> {
        let smtp = Smtp::from_config(&config);
        if let Some(password) = smtp.as_ref().ok().and_then(Smtp::password) {
            masker.add(password);
        }
        Ok(AlertDispatcher {
            shared: Arc::new(Shared {
                records: AlertStore::open(store)?,
                store: store.clone(),
                config,
                smtp,
                logs_dir,
                masker,
                notice: Box::new(notice),
                said: Mutex::new(HashSet::new()),
                worker: Mutex::new(None),
                finished: std::sync::atomic::AtomicBool::new(false),
                delivered: AtomicUsize::new(0),
                failed: AtomicUsize::new(0),
            }),
        })
    }

    /// The observer of one run of `dag`, to be called with every [`Progress`] event of the run.
    /// Says at once (through the notice function) when the DAG asks for email that cannot be
    /// sent: no SMTP server, an unset password variable, or no recipients anywhere.
    pub fn observer(&self, dag: Arc<Dag>, run: &DagRun, sync_logs: SyncLogs) -> RunObserver {
        self.shared.check_email(&dag);
        RunObserver {
            shared: self.shared.clone(),
            dag,
            run_id: run.run_id.clone(),
            logical_date: run.logical_date,
            sync_logs,
        }
    }

    /// Waits until every queued delivery is delivered or failed, at most `bound`; deliveries still
    /// in flight then are recorded as failed. Returns the counts for this dispatcher's lifetime.
    /// Deliveries queued after this call are dropped.
    pub fn finish(&self, bound: Duration) -> Summary {
        let sender = {
            let mut worker = self.shared.worker.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.finished.store(true, Ordering::Relaxed);
            worker.take()
        };
        if let Some(sender) = sender {
            let (done, wait) = std::sync::mpsc::channel();
            if sender.send(Msg::Finish { deadline: Instant::now() + bound, done }).is_ok() {
                // The worker answers by the deadline; the margin covers marking the stragglers.
                let _ = wait.recv_timeout(bound + Duration::from_secs(5));
            }
        }
        self.summary()
    }

    /// The counts so far.
    pub fn summary(&self) -> Summary {
        Summary {
            delivered: self.shared.delivered.load(Ordering::Relaxed),
            failed: self.shared.failed.load(Ordering::Relaxed),
        }
    }
}

/// Watches one run and queues its alerts.
pub struct RunObserver {
    shared: Arc<Shared>,
    dag: Arc<Dag>,
    run_id: String,
    logical_date: DateTime<Utc>,
    sync_logs: SyncLogs,
}

/// The email and webhook settings that apply to a task: the task's own `alerts.email` and
/// `alerts.webhook` each replace the DAG's; a part the task does not set is the DAG's.
pub fn task_alerts<'a>(dag: &'a Dag, task: &'a Task) -> (Option<&'a EmailAlert>, Option<&'a WebhookAlert>) {
    let own = task.alerts.as_ref();
    let dag_level = dag.alerts.as_ref();
    (
        own.and_then(|a| a.email.as_ref()).or_else(|| dag_level.and_then(|a| a.email.as_ref())),
        own.and_then(|a| a.webhook.as_ref()).or_else(|| dag_level.and_then(|a| a.webhook.as_ref())),
    )
}

impl RunObserver {
    /// Handles one progress event: queues a delivery per channel that wants it. Never blocks.
    pub fn observe(&self, progress: &Progress) {
        match progress {
            Progress::TaskSettled { task_id, state, try_number, duration, error } => {
                let event = match state {
                    TaskState::Failed => AlertEvent::Failure,
                    TaskState::UpForRetry => AlertEvent::Retry,
                    TaskState::Success => AlertEvent::Success,
                    _ => return,
                };
                if *try_number == 0 {
                    return;
                }
                let Some(task) = self.dag.task(task_id) else { return };
                let (email, webhook) = task_alerts(&self.dag, task);
                self.queue(email, webhook, event, Some((task_id, *try_number)), *duration, error.clone());
            }
            Progress::RunFinished { state } => {
                let event = if *state == RunState::Success { AlertEvent::RunSuccess } else { AlertEvent::RunFailure };
                let alerts = self.dag.alerts.as_ref();
                let (email, webhook) = (alerts.and_then(|a| a.email.as_ref()), alerts.and_then(|a| a.webhook.as_ref()));
                self.queue(email, webhook, event, None, None, None);
            }
            _ => {}
        }
    }

    fn queue(
        &self,
        email: Option<&EmailAlert>,
        webhook: Option<&WebhookAlert>,
        event: AlertEvent,
        task: Option<(&str, u32)>,
        duration: Option<Duration>,
        error: Option<String>,
    ) {
        let mut channels = Vec::new();
        if let Some(email) = email.filter(|e| e.on.contains(&event)) {
            channels.push((Channel::Email { to: self.shared.recipients(email) }, WebhookFormat::Json));
        }
        if let Some(hook) = webhook.filter(|w| w.on.contains(&event)) {
            channels.extend(hook.urls.iter().map(|url| (Channel::Webhook { url: url.clone() }, hook.format)));
        }
        for (channel, format) in channels {
            let job = Job {
                delivery: AlertDelivery::new(&self.dag.id, &self.run_id, task, event, channel),
                dag: self.dag.clone(),
                logical_date: self.logical_date,
                format,
                duration,
                error: error.clone(),
                sync_logs: self.sync_logs.clone(),
            };
            self.shared.submit(job);
        }
    }
}

impl Shared {
    fn say(&self, text: String) {
        let mut said = self.said.lock().unwrap_or_else(|e| e.into_inner());
        if said.insert(text.clone()) {
            (self.notice)(&self.masker.mask(&text));
        }
    }

    fn recipients(&self, email: &EmailAlert) -> Vec<String> {
        if email.to.is_empty() {
            self.config.alerts.to.iter().map(|a| a.to_text()).collect()
        } else {
            email.to.clone()
        }
    }

    /// Says now, not when the first task fails, that the DAG's email alerts cannot go out.
    fn check_email(&self, dag: &Dag) {
        let mut scopes: Vec<(String, &EmailAlert)> = Vec::new();
        if let Some(email) = dag.alerts.as_ref().and_then(|a| a.email.as_ref()) {
            scopes.push(("alerts.email".into(), email));
        }
        for task in &dag.tasks {
            if let Some(email) = task.alerts.as_ref().and_then(|a| a.email.as_ref()) {
                scopes.push((format!("alerts.email of task {}", task.id), email));
            }
        }
        let wanted: Vec<&(String, &EmailAlert)> = scopes.iter().filter(|(_, e)| !e.on.is_empty()).collect();
        if wanted.is_empty() {
            return;
        }
        if let Err(e) = &self.smtp {
            self.say(format!("DAG \"{}\" asks for alert emails, but none can be sent: {}", dag.id, e.message));
        }
        for (scope, email) in wanted {
            if self.recipients(email).is_empty() {
                self.say(format!(
                    "DAG \"{}\" asks for alert emails ({scope} in {}) but names no recipients, and {} sets no alerts.to; no email will be sent until you add `to:` there or alerts.to to the config file",
                    dag.id,
                    dag.file.display(),
                    self.config.describe_source()
                ));
            }
        }
    }

    fn submit(self: &Arc<Self>, job: Job) {
        let mut worker = self.worker.lock().unwrap_or_else(|e| e.into_inner());
        let unsent = if self.finished.load(Ordering::Relaxed) {
            Some(Msg::Deliver(Box::new(job)))
        } else {
            let sender = worker.get_or_insert_with(|| start_worker(self.clone()));
            sender.send(Msg::Deliver(Box::new(job))).err().map(|e| e.0)
        };
        drop(worker);
        if let Some(Msg::Deliver(job)) = unsent {
            self.say(format!(
                "alert not sent ({} for {}): the alert thread has stopped",
                job.delivery.channel.describe(),
                job.delivery.describe_event()
            ));
        }
    }

    fn record(&self, delivery: &AlertDelivery) {
        if let Err(e) = self.records.put(delivery) {
            self.say(format!("cannot record the alert delivery ({}): {e}", delivery.describe_event()));
        }
    }

    /// The facts of a job's event, with the log tail or the run's tasks.
    async fn facts(&self, job: &Job) -> AlertFacts {
        let d = &job.delivery;
        let url = self.config.alerts.ui_url.as_ref().map(|u| run_url(&u.0, &d.dag_id, &d.run_id));
        let mut facts = AlertFacts {
            event: d.event,
            dag_id: d.dag_id.clone(),
            run_id: d.run_id.clone(),
            logical_date: job.logical_date,
            task: None,
            tasks: Vec::new(),
            run_duration: None,
            run_url: url,
        };
        match &d.task_id {
            Some(task_id) => {
                // The attempt's last lines are queued to the log thread before the executor
                // reports the attempt's end; wait until they are on disk.
                let sync = job.sync_logs.clone();
                let _ = tokio::task::spawn_blocking(move || sync()).await;
                let log_path = attempt_log_path(&self.logs_dir, &d.dag_id, &d.run_id, task_id, d.try_number);
                let task = job.dag.task(task_id);
                facts.task = Some(TaskFacts {
                    task_id: task_id.clone(),
                    operator: task.map_or_else(String::new, |t| t.operator.clone()),
                    try_number: d.try_number,
                    max_tries: task.map_or(d.try_number, |t| t.retry.retries + 1),
                    duration: job.duration,
                    error: job.error.as_deref().map(|e| self.masker.mask(e).into_owned()),
                    log_tail: log_tail(&log_path).map(|lines| lines.iter().map(|l| self.masker.mask(l).into_owned()).collect()),
                    log_path,
                });
            }
            None => {
                if let Ok(Some(run)) = self.store.run(&d.dag_id, &d.run_id) {
                    facts.run_duration = match (run.start, run.end) {
                        (Some(s), Some(e)) => (e - s).to_std().ok(),
                        _ => None,
                    };
                }
                let stored = self.store.task_instances(&d.dag_id, &d.run_id).unwrap_or_default();
                facts.tasks = job
                    .dag
                    .tasks
                    .iter()
                    .map(|t| {
                        let ti = stored.iter().find(|ti| ti.task_id == t.id);
                        TaskLine {
                            task_id: t.id.clone(),
                            state: ti.map_or("none", |ti| ti.state.name()).to_string(),
                            tries: format!("{}/{}", ti.map_or(0, |ti| ti.try_number), t.retry.retries + 1),
                            error: ti
                                .and_then(|ti| ti.error.as_deref())
                                .and_then(|e| e.lines().next())
                                .map(|e| self.masker.mask(e).into_owned())
                                .unwrap_or_default(),
                        }
                    })
                    .collect();
            }
        }
        facts
    }
}

fn start_worker(shared: Arc<Shared>) -> mpsc::UnboundedSender<Msg> {
    let (tx, rx) = mpsc::unbounded_channel();
    let spawned = std::thread::Builder::new().name("flowctl-alerts".into()).spawn(move || {
        match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime.block_on(worker(shared, rx)),
            Err(e) => (shared.notice)(&format!("alerts are off: cannot start their runtime: {e}")),
        }
    });
    if let Err(e) = spawned {
        eprintln!("warning: alerts are off: cannot start their thread: {e}");
    }
    tx
}

type InFlight = Arc<Mutex<HashMap<Vec<u8>, AlertDelivery>>>;

async fn worker(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let webhooks = Webhooks::new();
    let in_flight: InFlight = Arc::default();
    let mut jobs = JoinSet::new();
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(Msg::Deliver(job)) => {
                    jobs.spawn(deliver(shared.clone(), webhooks.clone(), in_flight.clone(), *job));
                }
                Some(Msg::Finish { deadline, done }) => {
                    while let Ok(Msg::Deliver(job)) = rx.try_recv() {
                        jobs.spawn(deliver(shared.clone(), webhooks.clone(), in_flight.clone(), *job));
                    }
                    let all_done = async { while jobs.join_next().await.is_some() {} };
                    let _ = tokio::time::timeout_at(deadline.into(), all_done).await;
                    jobs.abort_all();
                    while jobs.join_next().await.is_some() {}
                    let stragglers: Vec<AlertDelivery> =
                        in_flight.lock().unwrap_or_else(|e| e.into_inner()).drain().map(|(_, d)| d).collect();
                    for mut d in stragglers {
                        let last = d.last_error.clone().unwrap_or_else(|| "its first try had not finished".into());
                        d.state = DeliveryState::Failed;
                        d.last_error = Some(format!("flowctl stopped waiting for it when it exited ({last})"));
                        d.updated_at = Utc::now();
                        shared.record(&d);
                        shared.failed.fetch_add(1, Ordering::Relaxed);
                        shared.say(format!("alert not delivered: {} for {}: {}", d.channel.describe(), d.describe_event(), d.last_error.as_deref().unwrap_or_default()));
                    }
                    let _ = done.send(());
                    return;
                }
                None => return,
            },
            Some(_) = jobs.join_next(), if !jobs.is_empty() => {}
        }
    }
}

enum Payload {
    Email { smtp: Box<Smtp>, to: Vec<lettre::message::Mailbox>, subject: String, body: String },
    Webhook { url: String, body: serde_json::Value },
}

async fn prepare(shared: &Shared, job: &Job) -> Result<Payload, SendError> {
    match &job.delivery.channel {
        Channel::Email { to } => {
            let smtp = shared.smtp.clone()?;
            if to.is_empty() {
                return Err(SendError::fatal(format!(
                    "no recipients: the DAG's alerts.email has no `to:` and {} sets no alerts.to",
                    shared.config.describe_source()
                )));
            }
            let to = mailboxes(to)?;
            let facts = shared.facts(job).await;
            Ok(Payload::Email { smtp: Box::new(smtp), to, subject: facts.subject(), body: facts.text() })
        }
        Channel::Webhook { url } => {
            let facts = shared.facts(job).await;
            let body = match job.format {
                WebhookFormat::Json => facts.json(),
                WebhookFormat::Slack => facts.slack(),
            };
            Ok(Payload::Webhook { url: url.clone(), body })
        }
    }
}

async fn deliver(shared: Arc<Shared>, webhooks: Webhooks, in_flight: InFlight, job: Job) {
    let mut d = job.delivery.clone();
    match shared.records.claim(&d) {
        Ok(true) => {}
        Ok(false) => return, // already sent, or being sent: one message per event
        Err(e) => shared.say(format!("cannot record the alert delivery ({}): {e}; sending it anyway", d.describe_event())),
    }
    let key = d.key();
    in_flight.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone(), d.clone());
    match prepare(&shared, &job).await {
        Err(e) => {
            d.state = DeliveryState::Failed;
            d.last_error = Some(shared.masker.mask(&e.message).into_owned());
        }
        Ok(payload) => {
            for attempt in 1..=TRIES {
                d.tries = attempt;
                let result = match &payload {
                    Payload::Email { smtp, to, subject, body } => smtp.send(to, subject, body.clone()).await,
                    Payload::Webhook { url, body } => webhooks.post(url, body).await,
                };
                match result {
                    Ok(()) => {
                        d.state = DeliveryState::Delivered;
                        break;
                    }
                    Err(e) => {
                        d.last_error = Some(shared.masker.mask(&e.message).into_owned());
                        if !e.retryable || attempt == TRIES {
                            d.state = DeliveryState::Failed;
                            break;
                        }
                        d.updated_at = Utc::now();
                        shared.record(&d);
                        in_flight.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone(), d.clone());
                        tokio::time::sleep(FIRST_RETRY_DELAY * 2u32.pow(attempt - 1)).await;
                    }
                }
            }
        }
    }
    d.updated_at = Utc::now();
    // No await between the final record and leaving the in-flight set: a shutdown that aborts
    // this task sees either both or neither.
    shared.record(&d);
    in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
    if d.state == DeliveryState::Delivered {
        shared.delivered.fetch_add(1, Ordering::Relaxed);
    } else {
        shared.failed.fetch_add(1, Ordering::Relaxed);
        let tries = if d.tries > 1 { format!(" after {} tries", d.tries) } else { String::new() };
        shared.say(format!(
            "alert not delivered{tries}: {} for {} of run {}: {}",
            d.channel.describe(),
            d.describe_event(),
            d.run_id,
            d.last_error.as_deref().unwrap_or_default()
        ));
    }
}
