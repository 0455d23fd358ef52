//! The `flowctl` binary: parses the command line, builds the operator registry and hands over to
//! the engine's commands. Nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use flowctl_engine::commands::{self, CommandError, GraphFormat, OutputFormat, RunArgs, Style};
use flowctl_engine::protocol::Request;
use flowctl_engine::server::ServerArgs;
use flowctl_engine::executor::DEFAULT_PARALLELISM;

/// A declarative DAG workflow engine: YAML pipelines, an embedded store, one binary.
#[derive(Parser)]
#[command(name = "flowctl", version, about, propagate_version = true)]
#[command(after_help = "Exit codes: 0 success, 1 a run failed, 2 invalid input or usage.")]
struct Cli {
    /// The home folder holding state and logs [default: $FLOWCTL_HOME, else ~/.flowctl]
    #[arg(long, global = true, value_name = "DIR")]
    home: Option<PathBuf>,
    /// The config file (SMTP server, alert recipients, connections) [default: <home>/config.yaml]
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check DAG files and report every error with its place.
    Validate {
        /// DAG files, or folders searched recursively for *.yaml and *.yml.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// `text` for people, `json` for editors and CI.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Print a DAG's task graph.
    Graph {
        /// The DAG file.
        file: PathBuf,
        /// `dot` (Graphviz) or `mermaid`.
        #[arg(long, value_enum, default_value_t = Graph::Dot)]
        format: Graph,
    },
    /// Print the JSON Schema of DAG files, for editors.
    Schema,
    /// Compile DAG files and store their new versions; on any error, store nothing.
    Apply {
        /// DAG files, or folders searched recursively for *.yaml and *.yml.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Run a DAG once, in this process, to the end.
    Run {
        /// An applied DAG's id, or a DAG file (applied first).
        dag: String,
        /// Override a declared parameter: --param key=value (repeatable).
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// The logical date: YYYY-MM-DD (midnight in the DAG's time zone) or RFC 3339 [default: now]
        #[arg(long)]
        date: Option<String>,
        /// The most attempts running at once, across all tasks.
        #[arg(long, default_value_t = DEFAULT_PARALLELISM, value_parser = clap::value_parser!(u16).range(1..))]
        parallelism: u16,
    },
    /// Show DAGs, a DAG's runs, or a run's tasks.
    Status {
        /// A DAG id: list its runs.
        dag: Option<String>,
        /// A run id: list its tasks.
        run: Option<String>,
        /// `text` for people, `json` for scripts.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// With a DAG: how many of its newest runs to show.
        #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "all")]
        limit: u32,
        /// With a DAG: show every run.
        #[arg(long)]
        all: bool,
    },
    /// Run the scheduler, the executor and the HTTP API for the home until SIGTERM or SIGINT.
    Server {
        /// Where the API listens; beyond this machine only with FLOWCTL_API_TOKEN set.
        #[arg(long, default_value = "127.0.0.1:8787", value_name = "ADDR")]
        listen: String,
        /// Apply this folder's DAG files at start and whenever they change.
        #[arg(long, value_name = "DIR")]
        dags: Option<PathBuf>,
        /// How long running tasks get to finish after SIGTERM before they are stopped.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        grace: std::time::Duration,
        /// The most attempts running at once, across all runs.
        #[arg(long, default_value_t = DEFAULT_PARALLELISM, value_parser = clap::value_parser!(u16).range(1..))]
        parallelism: u16,
    },
    /// Queue a run of an applied DAG (the server starts it).
    Trigger {
        /// The DAG id.
        dag: String,
        /// Override a declared parameter: --param key=value (repeatable).
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// The logical date: YYYY-MM-DD (midnight in the DAG's time zone) or RFC 3339 [default: now]
        #[arg(long)]
        date: Option<String>,
        /// Wait for the run to end and print its summary (exit 1 if it failed).
        #[arg(long)]
        wait: bool,
    },
    /// Reset tasks of a run so they run again; upstream outputs that are not cleared are kept.
    Clear {
        /// The DAG id.
        dag: String,
        /// The run id.
        run: String,
        /// Only this task (repeatable) [default: every task]
        #[arg(long = "task", value_name = "TASK")]
        tasks: Vec<String>,
        /// With the tasks downstream of the selected ones.
        #[arg(long)]
        downstream: bool,
        /// Only tasks that failed or were upstream_failed.
        #[arg(long)]
        failed_only: bool,
        /// Return at once instead of waiting for the run to end.
        #[arg(long)]
        no_wait: bool,
    },
    /// Cancel a run: running tasks are stopped and the run fails.
    Cancel {
        /// The DAG id.
        dag: String,
        /// The run id.
        run: String,
    },
    /// Stop scheduling a DAG (runs in progress go on).
    Pause {
        /// The DAG id.
        dag: String,
    },
    /// Schedule a paused DAG again.
    Unpause {
        /// The DAG id.
        dag: String,
    },
    /// Create runs for the past intervals whose logical dates lie in a range.
    Backfill {
        /// The DAG id.
        dag: String,
        /// The first logical date (YYYY-MM-DD or RFC 3339).
        #[arg(long)]
        from: String,
        /// The last logical date, included.
        #[arg(long)]
        to: String,
        /// Clear the failed tasks of runs in the range that failed, and run them again.
        #[arg(long)]
        rerun_failed: bool,
        /// Return at once instead of waiting for the runs to end.
        #[arg(long)]
        no_wait: bool,
    },
    /// Print a task attempt's log.
    Logs {
        /// The DAG id.
        dag: String,
        /// The run id.
        run: String,
        /// The task id.
        task: String,
        /// The attempt number [default: the latest]
        #[arg(long)]
        attempt: Option<u32>,
        /// Keep printing new lines until the attempt ends.
        #[arg(long, short)]
        follow: bool,
    },
    /// Print a scheduled DAG's next fire times and the data interval of each run.
    Next {
        /// An applied DAG's id, or a DAG file (compiled, not stored).
        dag: String,
        /// How many fire times.
        #[arg(short = 'n', long = "count", value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=10_000))]
        count: u16,
        /// Fire times strictly after this instant: RFC 3339, or a date (midnight in the DAG's time zone) [default: now]
        #[arg(long, value_name = "TIMESTAMP")]
        after: Option<String>,
    },
    /// Alerts: check that alert emails can be sent.
    Alert {
        #[command(subcommand)]
        command: AlertCommand,
    },
    /// Connections (AWS, MySQL, PostgreSQL): list them with secrets masked, or test one.
    Connections {
        #[command(subcommand)]
        command: ConnectionsCommand,
    },
}

#[derive(Subcommand)]
enum ConnectionsCommand {
    /// List the connections of the config file and of FLOWCTL_CONN_* variables, secrets masked.
    List {
        /// `text` for people, `json` for scripts.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Check that a connection works (AWS: STS GetCallerIdentity; SQL: SELECT version()).
    Test {
        /// The connection's name, e.g. aws_default.
        name: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

impl From<Output> for OutputFormat {
    fn from(o: Output) -> Self {
        match o {
            Output::Text => OutputFormat::Text,
            Output::Json => OutputFormat::Json,
        }
    }
}

#[derive(Subcommand)]
enum AlertCommand {
    /// Send a test message through the SMTP server of the config file, and say what went wrong.
    Test {
        /// The recipient [default: alerts.to of the config file]
        #[arg(long, value_name = "ADDR")]
        to: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Graph {
    Dot,
    Mermaid,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let registry = flowctl_operators::registry();
    let home = cli.home.as_deref();
    let config = cli.config.as_deref();
    let result: Result<u8, CommandError> = match cli.command {
        Command::Validate { paths, output } => Ok(commands::validate(&paths, output.into(), &registry)),
        Command::Graph { file, format } => {
            let format = match format {
                Graph::Dot => GraphFormat::Dot,
                Graph::Mermaid => GraphFormat::Mermaid,
            };
            Ok(commands::graph(&file, format, &registry))
        }
        Command::Schema => Ok(commands::schema(&registry)),
        Command::Apply { paths } => {
            let paths = paths.iter().map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone())).collect();
            commands::dispatch(home, config, &Request::Apply { paths }, false, &Style::text(), &registry)
        }
        Command::Server { listen, dags, grace, parallelism } => {
            let args = ServerArgs { listen, dags, grace, parallelism, config: cli.config.clone() };
            flowctl_engine::server::serve(home, &args, &registry).map_err(CommandError::from)
        }
        Command::Trigger { dag, params, date, wait } => {
            commands::dispatch(home, config, &Request::Trigger { dag, params, date }, wait, &Style::text(), &registry)
        }
        Command::Clear { dag, run, tasks, downstream, failed_only, no_wait } => {
            let request = Request::Clear { dag, run, tasks, downstream, failed_only };
            commands::dispatch(home, config, &request, !no_wait, &Style::text(), &registry)
        }
        Command::Cancel { dag, run } => commands::dispatch(home, config, &Request::Cancel { dag, run }, true, &Style::text(), &registry),
        Command::Pause { dag } => commands::dispatch(home, config, &Request::Pause { dag, paused: true }, false, &Style::text(), &registry),
        Command::Unpause { dag } => {
            commands::dispatch(home, config, &Request::Pause { dag, paused: false }, false, &Style::text(), &registry)
        }
        Command::Backfill { dag, from, to, rerun_failed, no_wait } => {
            commands::dispatch(home, config, &Request::Backfill { dag, from, to, rerun_failed }, !no_wait, &Style::text(), &registry)
        }
        Command::Run { dag, params, date, parallelism } => {
            let args = RunArgs { target: dag, params, date, parallelism, config: cli.config.clone() };
            commands::run(home, &args, &registry)
        }
        Command::Status { dag, run, output, limit, all } => {
            let request = match (dag, run) {
                (None, _) => Request::Dags,
                (Some(dag), None) => Request::Runs { dag, limit: (!all).then_some(limit as usize) },
                (Some(dag), Some(run)) => Request::Run { dag, run },
            };
            let style = Style { format: output.into(), ..Style::text() };
            commands::dispatch(home, config, &request, false, &style, &registry)
        }
        Command::Logs { dag, run, task, attempt, follow } => commands::logs(home, &dag, &run, &task, attempt, follow),
        Command::Alert { command: AlertCommand::Test { to } } => commands::alert_test(home, cli.config.as_deref(), to.as_deref(), &registry),
        Command::Connections { command: ConnectionsCommand::List { output } } => {
            commands::connections_list(home, cli.config.as_deref(), output.into(), &registry)
        }
        Command::Connections { command: ConnectionsCommand::Test { name } } => {
            commands::connections_test(home, cli.config.as_deref(), &name, &registry)
        }
        Command::Next { dag, count, after } => commands::next(home, &dag, usize::from(count), after.as_deref(), &registry),
    };
    ExitCode::from(result.unwrap_or_else(|e| e.report()))
}
