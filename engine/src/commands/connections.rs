//! `flowctl connections list` and `flowctl connections test NAME`: what connections this process
//! would hand its tasks, and whether one works (see [`crate::service::list_connections`]).

use std::path::Path;

use super::table::Table;
use super::{exit, CommandError, OutputFormat};
use crate::config::Config;
use crate::operator::Registry;
use crate::service;
use crate::state::Home;

/// Runs `flowctl connections list`.
pub fn connections_list(home: Option<&Path>, config: Option<&Path>, format: OutputFormat, registry: &Registry) -> Result<u8, CommandError> {
    let config = Config::load(&Home::resolve(home), config, &registry.aws_services())?;
    let all = service::list_connections(&config);
    match format {
        OutputFormat::Json => outln!("{}", serde_json::to_string_pretty(&all).unwrap_or_default()),
        OutputFormat::Text => {
            let mut table = Table::new(&["NAME", "TYPE", "SOURCE", "SETTINGS"]);
            for c in all {
                table.row(vec![c.name, c.kind, c.source, c.settings]);
            }
            out!("{}", table.render());
        }
    }
    Ok(exit::OK)
}

/// Runs `flowctl connections test NAME`: exit 0 when the connection works, 1 when it does not,
/// 2 when there is no such connection or nothing to test it with.
pub fn connections_test(home: Option<&Path>, config: Option<&Path>, name: &str, registry: &Registry) -> Result<u8, CommandError> {
    let config = Config::load(&Home::resolve(home), config, &registry.aws_services())?;
    let test = service::test_connection(&config, name, registry)?;
    let info = &test.info;
    if let Some(why) = &test.broken {
        eprintln!("error: connection \"{}\" ({}) cannot be used: {why}", info.name, info.source);
        return Ok(exit::RUN_FAILED);
    }
    outln!("testing connection \"{}\" ({}, from {}): {}", info.name, info.kind, info.source, info.settings);
    match test.run() {
        Ok(detail) => {
            outln!("ok: {detail}");
            Ok(exit::OK)
        }
        Err(why) => {
            eprintln!("error: connection \"{}\" does not work: {why}", info.name);
            Ok(exit::RUN_FAILED)
        }
    }
}
