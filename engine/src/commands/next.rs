//! `flowctl next DAG|FILE [-n 10] [--after TIMESTAMP]`: when a scheduled DAG runs next, and the
//! data interval each of those runs covers. An applied DAG is asked of the service (through the
//! server when one holds the home); a file is compiled on the spot and not stored.

use std::path::Path;

use chrono::Utc;

use super::render::{next_text, Style};
use super::{exit, CommandError};
use crate::operator::Registry;
use crate::protocol::Request;
use crate::service::{self, Target};

/// Runs `flowctl next`: `target` is an applied DAG's id or a DAG file.
pub fn next(home: Option<&Path>, target: &str, n: usize, after: Option<&str>, registry: &Registry) -> Result<u8, CommandError> {
    if !service::looks_like_file(target) {
        let request = Request::Next { dag: target.to_string(), n, after: after.map(str::to_string) };
        return super::dispatch(home, None, &request, false, &Style::text(), registry);
    }
    let Target::File(dag) = service::resolve_target(None, target, registry)? else {
        return Err(CommandError::usage(format!("{target}: expected a DAG file")));
    };
    out!("{}", next_text(&service::next_fires(&dag, n, after, Utc::now())?));
    Ok(exit::OK)
}
