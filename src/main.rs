//! The `flowctl` binary: parses the command line, builds the operator registry and hands over to
//! the engine's commands. Nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use flowctl_engine::commands::{self, CommandError, GraphFormat, OutputFormat, RunArgs};
use flowctl_engine::executor::DEFAULT_PARALLELISM;

/// A declarative DAG workflow engine: YAML pipelines, an embedded store, one binary.
#[derive(Parser)]
#[command(name = "flowctl", version, about, propagate_version = true)]
#[command(after_help = "Exit codes: 0 success, 1 a run failed, 2 invalid input or usage.")]
struct Cli {
    /// The home folder holding state and logs [default: $FLOWCTL_HOME, else ~/.flowctl]
    #[arg(long, global = true, value_name = "DIR")]
    home: Option<PathBuf>,
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

#[derive(Clone, Copy, ValueEnum)]
enum Graph {
    Dot,
    Mermaid,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let registry = flowctl_operators::registry();
    let home = cli.home.as_deref();
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
        Command::Apply { paths } => commands::apply(home, &paths, &registry),
        Command::Run { dag, params, date, parallelism } => {
            let args = RunArgs { target: dag, params, date, parallelism };
            commands::run(home, &args, &registry)
        }
        Command::Status { dag, run, output } => {
            commands::status(home, dag.as_deref(), run.as_deref(), output.into(), &registry)
        }
        Command::Logs { dag, run, task, attempt, follow } => commands::logs(home, &dag, &run, &task, attempt, follow),
    };
    ExitCode::from(result.unwrap_or_else(|e| e.report()))
}
