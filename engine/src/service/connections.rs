//! The connections a process would hand its tasks, and whether one works, before a scheduled run
//! finds out at 3 a.m.
//!
//! Both read the config file and the environment only: they need no home lock and work beside a
//! running server (whose environment may differ: each connection says where it came from).
//! Secrets never leave: keys and passwords show as `***`, and every text passes through a masker
//! that knows the connections' secret values.

use std::time::Duration;

use crate::config::Config;
use crate::connections::{Connection, ConnectionKind};
use crate::operator::{ConnectionTester, Registry};
use crate::protocol::{ConnectionInfo, ConnectionTested, ServiceError};
use crate::secrets::Masker;

/// How long a connection test waits for an answer before it calls the connection unreachable.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The settings of a connection in one line, secrets masked.
pub fn describe_connection(connection: &Connection) -> String {
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

fn info(connection: &Connection, masker: &Masker) -> ConnectionInfo {
    ConnectionInfo {
        name: connection.name.clone(),
        kind: connection.kind.type_name().to_string(),
        source: masker.mask(&connection.source).into_owned(),
        settings: masker.mask(&describe_connection(connection)).into_owned(),
    }
}

/// Every connection of `config` and of this process's `FLOWCTL_CONN_*` variables, by name.
pub fn list_connections(config: &Config) -> Vec<ConnectionInfo> {
    let connections = config.connections();
    let masker = super::masker_for(config);
    connections.all().iter().map(|c| info(c, &masker)).collect()
}

/// A connection about to be tested: what it is, and how to test it.
pub struct ConnectionTest {
    /// The connection, as listed.
    pub info: ConnectionInfo,
    /// Why it cannot be used at all (a variable it names is not set), masked: then there is
    /// nothing to test.
    pub broken: Option<String>,
    connection: Connection,
    tester: Option<std::sync::Arc<dyn ConnectionTester>>,
    masker: Masker,
}

impl ConnectionTest {
    /// Connects and makes the cheapest authenticated call, within [`TEST_TIMEOUT`]. Returns what
    /// was learnt (account and identity, server version) or what is wrong and how to fix it,
    /// secrets masked.
    pub fn run(&self) -> Result<String, String> {
        if let Some(why) = &self.broken {
            return Err(why.clone());
        }
        let Some(tester) = &self.tester else { return Err("no tester".into()) };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the async runtime: {e}"))?;
        let result = runtime.block_on(async {
            match tokio::time::timeout(TEST_TIMEOUT, tester.test(&self.connection)).await {
                Ok(result) => result,
                Err(_) => Err(format!(
                    "no answer within {}s; check that the endpoint or host is reachable from this machine",
                    TEST_TIMEOUT.as_secs()
                )),
            }
        });
        result.map(|ok| self.masker.mask(&ok).into_owned()).map_err(|e| self.masker.mask(&e).into_owned())
    }
}

impl super::Service<'_> {
    /// Every connection of the host's config and environment, secrets masked.
    pub fn connections(&self) -> Result<Vec<ConnectionInfo>, ServiceError> {
        Ok(list_connections(&self.host.config()?))
    }

    /// Tests connection `name` and says what was found.
    pub fn test_connection(&self, name: &str) -> Result<ConnectionTested, ServiceError> {
        let test = test_connection(&self.host.config()?, name, self.registry())?;
        let (ok, detail) = match test.run() {
            Ok(detail) => (true, detail),
            Err(why) => (false, why),
        };
        Ok(ConnectionTested { connection: test.info, ok, detail })
    }
}

/// Prepares the test of connection `name`: an unknown name, or a type this build has no tester
/// for, is an error saying what to do; a connection that cannot be used (a variable it names is
/// missing) comes back [`ConnectionTest::broken`].
pub fn test_connection(config: &Config, name: &str, registry: &Registry) -> Result<ConnectionTest, ServiceError> {
    let connections = config.connections();
    let masker = super::masker_for(config);
    let connection = connections.get(name).map_err(|e| ServiceError::not_found(e.0))?;
    if let ConnectionKind::Broken(why) = &connection.kind {
        let broken = Some(masker.mask(why).into_owned());
        return Ok(ConnectionTest { info: info(&connection, &masker), broken, connection, tester: None, masker });
    }
    let kind = connection.kind.type_name();
    let Some(tester) = registry.tester(kind) else {
        return Err(ServiceError::bad_request(format!(
            "this flowctl was built without the operators for {kind} connections, so it cannot test \"{}\"; build it with its default features",
            connection.name
        )));
    };
    Ok(ConnectionTest { info: info(&connection, &masker), broken: None, connection, tester: Some(tester), masker })
}
