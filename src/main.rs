//! The `flowctl` binary: parses the command line, builds the operator registry and hands over to
//! the engine's commands. Nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use flowctl_engine::commands::{self, GraphFormat, OutputFormat};

/// A declarative DAG workflow engine: YAML pipelines, an embedded store, one binary.
#[derive(Parser)]
#[command(name = "flowctl", version, about, propagate_version = true)]
#[command(after_help = "Exit codes: 0 success, 1 a run failed, 2 invalid input or usage.")]
struct Cli {
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
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum Graph {
    Dot,
    Mermaid,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let registry = flowctl_operators::registry();
    let code = match cli.command {
        Command::Validate { paths, output } => {
            let format = match output {
                Output::Text => OutputFormat::Text,
                Output::Json => OutputFormat::Json,
            };
            commands::validate(&paths, format, &registry)
        }
        Command::Graph { file, format } => {
            let format = match format {
                Graph::Dot => GraphFormat::Dot,
                Graph::Mermaid => GraphFormat::Mermaid,
            };
            commands::graph(&file, format, &registry)
        }
        Command::Schema => commands::schema(&registry),
    };
    ExitCode::from(code)
}
