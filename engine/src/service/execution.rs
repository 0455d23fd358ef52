//! Executing runs in this process: the executor, with the alerts its runs send and the retention
//! that prunes their DAG's history once they end. The server holds one for all its runs;
//! `flowctl run`, and `trigger --wait` without a server, hold one for the runs they wait for.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::alerts::{AlertDispatcher, Summary};
use crate::config::Config;
use crate::dag::Dag;
use crate::executor::{Executor, ExecutorSettings, Finished, Progress, RunControl};
use crate::operator::Registry;
use crate::protocol::ServiceError;
use crate::secrets::Masker;
use crate::state::{DagRun, Home, Store};

/// How runs are executed here.
#[derive(Debug, Clone)]
pub struct ExecutionSettings {
    /// `--config`: the config file [default: `<home>/config.yaml`].
    pub config: Option<PathBuf>,
    /// The most attempts running at once, across all runs.
    pub parallelism: usize,
    /// Whether commands die with this process (the server sets it; see
    /// [`crate::operator::TaskContext::die_with_flowctl`]).
    pub die_with_flowctl: bool,
    /// Values to mask beside the connections' and the SMTP password (the server's API token).
    pub secrets: Vec<String>,
}

/// The executor of a home, with its alerts and retention.
pub struct Execution {
    config: Config,
    store: Store,
    logs_dir: PathBuf,
    work_dir: PathBuf,
    executor: Arc<Executor>,
    alerts: AlertDispatcher,
}

impl Execution {
    /// Reads the config file (SMTP, alerts, connections) and starts the executor for `home`.
    /// Problems worth a person's attention (email that cannot be sent) go to `notice`.
    pub fn start(
        home: &Home,
        registry: &Registry,
        settings: ExecutionSettings,
        notice: impl Fn(&str) + Send + Sync + 'static,
    ) -> Result<Execution, ServiceError> {
        let config = Config::load(home.root(), settings.config.as_deref(), &registry.aws_services())?;
        let connections = Arc::new(config.connections());
        // Every secret before anything runs: the executor hands the masker's values to operators
        // when it is created.
        let masker = super::masker_for(&config);
        for secret in &settings.secrets {
            masker.add(secret);
        }
        let alerts = AlertDispatcher::new(config.clone(), home.store(), home.logs_dir(), masker.clone(), notice)?;
        let executor_settings = ExecutorSettings {
            parallelism: settings.parallelism,
            logs_dir: home.logs_dir(),
            work_dir: home.work_dir(),
            die_with_flowctl: settings.die_with_flowctl,
            connections,
        };
        let executor = Arc::new(Executor::new(home.store().clone(), registry.clone(), masker, executor_settings));
        Ok(Execution { config, store: home.store().clone(), logs_dir: home.logs_dir(), work_dir: home.work_dir(), executor, alerts })
    }

    /// Executes `run` of `dag` until it ends or `control` stops it, telling `progress` (and the
    /// alerts) every event; then prunes the DAG's ended runs beyond its retention.
    pub async fn execute(
        &self,
        dag: Arc<Dag>,
        run: DagRun,
        control: RunControl,
        progress: Arc<dyn Fn(Progress) + Send + Sync>,
    ) -> Result<Finished, ServiceError> {
        let sync = self.executor.clone();
        let observer = self.alerts.observer(dag.clone(), &run, Arc::new(move || sync.sync_logs()));
        let on_progress = move |p: Progress| {
            observer.observe(&p);
            progress(p);
        };
        let finished = self.executor.execute(dag.clone(), run, control, Arc::new(on_progress)).await?;
        // History stays within the DAG's `retention:` whichever process ran the run.
        if finished.run.state.is_terminal() {
            crate::runs::prune(&self.store, &self.logs_dir, &self.work_dir, &dag.id, dag.retention)?;
        }
        Ok(finished)
    }

    /// Waits until the attempt logs written so far are on disk.
    pub fn sync_logs(&self) {
        self.executor.sync_logs();
    }

    /// Ends the alerts: logs synced, deliveries in flight given up to `bound` to finish. Returns
    /// how many were delivered and how many failed.
    pub fn finish(&self, bound: Duration) -> Summary {
        self.executor.sync_logs();
        self.alerts.finish(bound)
    }

    /// The global slots in use, and in all.
    pub fn slots(&self) -> (usize, usize) {
        self.executor.slots()
    }

    /// How many alert deliveries succeeded and failed so far.
    pub fn alert_summary(&self) -> Summary {
        self.alerts.summary()
    }

    /// The config file it was started with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The masker of everything the runs write, which knows every secret of this process.
    pub fn masker(&self) -> &Masker {
        self.executor.masker()
    }

    /// The logs folder.
    pub fn logs_dir(&self) -> &Path {
        &self.logs_dir
    }
}
