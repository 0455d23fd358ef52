//! `flowctl connections list` and `flowctl connections test NAME`: what connections this process
//! would hand its tasks, and whether one works, before a scheduled run finds out at 3 a.m.
//!
//! Both read the config file and the environment only: they need no home lock and work beside a
//! running server (whose environment may differ: the listing says where each connection came
//! from). Secrets are never printed: keys and passwords show as `***`, and every message passes
//! through a masker that knows the connections' secret values.

use std::path::Path;
use std::time::Duration;

use super::table::Table;
use super::{exit, CommandError, OutputFormat};
use crate::config::Config;
use crate::connections::{Connection, ConnectionKind, Connections};
use crate::operator::Registry;
use crate::secrets::Masker;
use crate::state::Home;

/// How long `connections test` waits for an answer before it calls the connection unreachable.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The settings of a connection in one line, secrets masked.
pub fn describe(connection: &Connection) -> String {
    match &connection.kind {
        ConnectionKind::Aws(aws) => {
            let mut parts = Vec::new();
            if let Some(region) = &aws.region {
                parts.push(format!("region={region}"));
            }
            if let Some(profile) = &aws.profile {
                parts.push(format!("profile={profile}"));
            }
            if let Some(url) = &aws.endpoint_url {
                parts.push(format!("endpoint_url={url}"));
            }
            for (service, url) in &aws.endpoints {
                parts.push(format!("endpoints.{service}={url}"));
            }
            if let Some(keys) = &aws.keys {
                parts.push("access_key_id=***".into());
                parts.push("secret_access_key=***".into());
                if keys.session_token.is_some() {
                    parts.push("session_token=***".into());
                }
            }
            if let Some(role) = &aws.role_arn {
                parts.push(format!("role_arn={role}"));
            }
            if let Some(id) = &aws.external_id {
                parts.push(format!("external_id={id}"));
            }
            if aws.force_path_style {
                parts.push("force_path_style=true".into());
            }
            if parts.is_empty() {
                "default region and credential chain".to_string()
            } else {
                parts.join(" ")
            }
        }
        ConnectionKind::Sql(sql) => sql.display_url(),
        ConnectionKind::Broken(why) => format!("cannot be used: {why}"),
    }
}

/// Runs `flowctl connections list`.
pub fn connections_list(home: Option<&Path>, config: Option<&Path>, format: OutputFormat, registry: &Registry) -> Result<u8, CommandError> {
    let config = Config::load(&Home::resolve(home), config, &registry.aws_services())?;
    let connections = config.connections();
    let masker = masker_for(&connections);
    let all = connections.all();
    match format {
        OutputFormat::Json => {
            let items: Vec<serde_json::Value> = all
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "name": c.name,
                        "type": c.kind.type_name(),
                        "source": c.source,
                        "settings": describe(c),
                    })
                })
                .collect();
            let text = serde_json::to_string_pretty(&serde_json::Value::Array(items)).unwrap_or_default();
            outln!("{}", masker.mask(&text));
        }
        OutputFormat::Text => {
            let mut table = Table::new(&["NAME", "TYPE", "SOURCE", "SETTINGS"]);
            for c in &all {
                table.row(vec![c.name.clone(), c.kind.type_name().to_string(), c.source.clone(), describe(c)]);
            }
            out!("{}", masker.mask(&table.render()));
        }
    }
    Ok(exit::OK)
}

/// Runs `flowctl connections test NAME`: exit 0 when the connection works, 1 when it does not,
/// 2 when there is no such connection or nothing to test it with.
pub fn connections_test(home: Option<&Path>, config: Option<&Path>, name: &str, registry: &Registry) -> Result<u8, CommandError> {
    let config = Config::load(&Home::resolve(home), config, &registry.aws_services())?;
    let connections = config.connections();
    let masker = masker_for(&connections);
    let connection = connections.get(name).map_err(|e| CommandError::usage(e.0))?;
    if let ConnectionKind::Broken(why) = &connection.kind {
        eprintln!("error: connection \"{}\" ({}) cannot be used: {}", connection.name, connection.source, masker.mask(why));
        return Ok(exit::RUN_FAILED);
    }
    let kind = connection.kind.type_name();
    let Some(tester) = registry.tester(kind) else {
        return Err(CommandError::usage(format!(
            "this flowctl was built without the operators for {kind} connections, so it cannot test \"{}\"; build it with its default features",
            connection.name
        )));
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CommandError::usage(format!("cannot start the async runtime: {e}")))?;
    outln!("testing connection \"{}\" ({kind}, from {}): {}", connection.name, connection.source, masker.mask(&describe(&connection)));
    let result = runtime.block_on(async {
        match tokio::time::timeout(TEST_TIMEOUT, tester.test(&connection)).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "no answer within {}s; check that the endpoint or host is reachable from this machine",
                TEST_TIMEOUT.as_secs()
            )),
        }
    });
    match result {
        Ok(detail) => {
            outln!("ok: {}", masker.mask(&detail));
            Ok(exit::OK)
        }
        Err(why) => {
            eprintln!("error: connection \"{}\" does not work: {}", connection.name, masker.mask(&why));
            Ok(exit::RUN_FAILED)
        }
    }
}

fn masker_for(connections: &Connections) -> Masker {
    let masker = Masker::from_env();
    for secret in connections.secrets() {
        masker.add(&secret);
    }
    masker
}
