//! Named connections: how a task reaches AWS or a database without its DAG file holding a secret.
//!
//! A task names a connection (`connection: rds`, `aws_default` when it names none for AWS); the
//! connection says where the service is and how to log in. Connections come from two places, the
//! way Airflow's do:
//!
//! - the config file's `connections:` section, where secrets are never written: `*_env` keys
//!   name the environment variables that hold them;
//! - an environment variable `FLOWCTL_CONN_<NAME>` holding a URI (`aws://?region=eu-west-1`,
//!   `mysql://loader:pw@db:3306/loans`) or the same settings as JSON. It wins over the file, as
//!   `AIRFLOW_CONN_*` wins over Airflow's database.
//!
//! Every secret a connection resolves (keys, passwords, tokens) is handed to the masker when the
//! executor starts, so it is redacted from logs, status, errors and rendered settings. A connection
//! whose environment variable is missing or unreadable is kept, marked broken, and reported with
//! its name and the fix when a task uses it: one bad connection never stops the others' tasks.
//!
//! The engine only resolves settings; the operators build SDK clients and drivers from them (the
//! engine never depends on an AWS crate), and register testers that `flowctl connections test`
//! runs.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

/// The AWS connection a task uses when it names none.
pub const AWS_DEFAULT: &str = "aws_default";

/// The prefix of environment variables that define connections.
pub const ENV_PREFIX: &str = "FLOWCTL_CONN_";

/// Where connections are documented, for hints.
const DOCS: &str = "docs/connections.md";

/// The services an `aws` connection's `endpoints:` may name are the ones the operators of this
/// build declare ([`crate::operator::Registry::register_aws_service`]): the engine names none.
pub type Services<'a> = &'a [&'a str];

/// A connection as written in the config file or in a `FLOWCTL_CONN_*` variable's JSON.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ConnectionSpec {
    /// `type: aws`.
    Aws(AwsSpec),
    /// `type: mysql` (MySQL, MariaDB, RDS MySQL).
    #[serde(alias = "mariadb")]
    Mysql(SqlSpec),
    /// `type: postgres` (PostgreSQL, RDS PostgreSQL).
    #[serde(alias = "postgresql")]
    Postgres(SqlSpec),
}

/// `type: aws` settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSpec {
    /// The region, e.g. `eu-west-1` [default: the profile's or `AWS_REGION`].
    #[serde(default)]
    pub region: Option<String>,
    /// A profile of `~/.aws/config` (SSO and `credential_process` profiles work).
    #[serde(default)]
    pub profile: Option<String>,
    /// One endpoint for every service (a local stand-in such as moto_server, a VPC endpoint).
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// An endpoint per service, over `endpoint_url`: the keys are the services the operators of
    /// this build declare (`flowctl connections list` names them).
    #[serde(default)]
    pub endpoints: BTreeMap<String, String>,
    /// The environment variable holding the access key id.
    #[serde(default)]
    pub access_key_id_env: Option<String>,
    /// The environment variable holding the secret access key.
    #[serde(default)]
    pub secret_access_key_env: Option<String>,
    /// The environment variable holding a session token (temporary keys).
    #[serde(default)]
    pub session_token_env: Option<String>,
    /// A role to assume through STS with the credentials above (or the default chain's).
    #[serde(default)]
    pub role_arn: Option<String>,
    /// The external id the role's trust policy asks for.
    #[serde(default)]
    pub external_id: Option<String>,
    /// The session name of the assumed role [default: flowctl].
    #[serde(default)]
    pub role_session_name: Option<String>,
    /// Address buckets as `endpoint/bucket` instead of `bucket.endpoint` (needed for local
    /// endpoints such as `localhost`).
    #[serde(default)]
    pub force_path_style: bool,
}

/// `type: mysql` and `type: postgres` settings: a `uri`, or its parts.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlSpec {
    /// `mysql://user@host:3306/db` or `postgres://user@host:5432/db`, without the password.
    #[serde(default)]
    pub uri: Option<String>,
    /// The server's host name [default: localhost].
    #[serde(default)]
    pub host: Option<String>,
    /// The port [default: 3306 or 5432].
    #[serde(default)]
    pub port: Option<u16>,
    /// The user to log in as.
    #[serde(default)]
    pub user: Option<String>,
    /// The database (schema, for MySQL).
    #[serde(default)]
    pub database: Option<String>,
    /// The environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Driver options, e.g. `sslmode: require` (PostgreSQL) or `ssl-mode: REQUIRED` (MySQL).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// A resolved connection.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Its name (lower case).
    pub name: String,
    /// Where it was defined, for `flowctl connections list` and messages: the config file's path,
    /// `$FLOWCTL_CONN_<NAME>`, or `built-in`.
    pub source: String,
    /// Its settings, or why they cannot be used.
    pub kind: ConnectionKind,
}

/// What a connection connects to.
#[derive(Debug, Clone)]
pub enum ConnectionKind {
    /// AWS.
    Aws(AwsConnection),
    /// A SQL database.
    Sql(SqlConnection),
    /// A definition that cannot be used, with the reason and the fix.
    Broken(String),
}

impl ConnectionKind {
    /// `aws`, `mysql`, `postgres` or `broken`: the tester registry's key.
    pub fn type_name(&self) -> &'static str {
        match self {
            ConnectionKind::Aws(_) => "aws",
            ConnectionKind::Sql(sql) => sql.engine.name(),
            ConnectionKind::Broken(_) => "broken",
        }
    }
}

/// A secret value: never shown by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the SDK or driver that needs it; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Static AWS keys.
#[derive(Debug, Clone)]
pub struct AwsKeys {
    /// The access key id (shown masked).
    pub access_key_id: Secret,
    /// The secret access key.
    pub secret_access_key: Secret,
    /// The session token of temporary keys.
    pub session_token: Option<Secret>,
}

/// A resolved `type: aws` connection.
#[derive(Debug, Clone, Default)]
pub struct AwsConnection {
    /// The connection's name.
    pub name: String,
    /// The region.
    pub region: Option<String>,
    /// The profile.
    pub profile: Option<String>,
    /// The endpoint of every service.
    pub endpoint_url: Option<String>,
    /// Endpoints of single services, by the names the operators declare.
    pub endpoints: BTreeMap<String, String>,
    /// Static keys, when the connection names their variables.
    pub keys: Option<AwsKeys>,
    /// The role to assume.
    pub role_arn: Option<String>,
    /// The role's external id.
    pub external_id: Option<String>,
    /// The assumed role's session name.
    pub role_session_name: Option<String>,
    /// Path-style bucket addressing.
    pub force_path_style: bool,
}

impl AwsConnection {
    /// The endpoint for `service` (a name an operator declared): its own, else the global one.
    pub fn endpoint_for(&self, service: &str) -> Option<&str> {
        self.endpoints.get(service).or(self.endpoint_url.as_ref()).map(String::as_str)
    }

    /// Where the credentials come from, in words, for messages.
    pub fn credential_source(&self) -> String {
        let base = if self.keys.is_some() {
            "static keys from the environment variables the connection names".to_string()
        } else if let Some(profile) = &self.profile {
            format!("profile \"{profile}\"")
        } else {
            "the default credential chain (AWS_* variables, ~/.aws, SSO, instance role)".to_string()
        };
        match &self.role_arn {
            Some(role) => format!("role {role} assumed with {base}"),
            None => base,
        }
    }
}

/// Which SQL server a connection speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlEngine {
    /// MySQL or MariaDB.
    Mysql,
    /// PostgreSQL.
    Postgres,
}

impl SqlEngine {
    /// The type's name in the config file.
    pub fn name(self) -> &'static str {
        match self {
            SqlEngine::Mysql => "mysql",
            SqlEngine::Postgres => "postgres",
        }
    }

    /// The server's usual port.
    pub fn default_port(self) -> u16 {
        match self {
            SqlEngine::Mysql => 3306,
            SqlEngine::Postgres => 5432,
        }
    }
}

/// A resolved `type: mysql` or `type: postgres` connection.
#[derive(Debug, Clone)]
pub struct SqlConnection {
    /// The connection's name.
    pub name: String,
    /// MySQL or PostgreSQL.
    pub engine: SqlEngine,
    /// The host.
    pub host: String,
    /// The port.
    pub port: u16,
    /// The user.
    pub user: Option<String>,
    /// The password.
    pub password: Option<Secret>,
    /// The database.
    pub database: Option<String>,
    /// Driver options.
    pub options: BTreeMap<String, String>,
}

impl SqlConnection {
    /// The URL a driver connects with, password included: hand it to the driver, never log it.
    pub fn url(&self) -> String {
        self.build_url(self.password.as_ref().map(Secret::expose))
    }

    /// The URL with the password replaced by `***`, for messages and `connections list`.
    pub fn display_url(&self) -> String {
        self.build_url(self.password.as_ref().map(|_| "***"))
    }

    fn build_url(&self, password: Option<&str>) -> String {
        let scheme = match self.engine {
            SqlEngine::Mysql => "mysql",
            SqlEngine::Postgres => "postgres",
        };
        let mut url = url::Url::parse(&format!("{scheme}://placeholder")).expect("a fixed URL parses");
        let _ = url.set_host(Some(&self.host));
        let _ = url.set_port(Some(self.port));
        if let Some(user) = &self.user {
            let _ = url.set_username(user);
        }
        if let Some(password) = password {
            let _ = url.set_password(Some(password));
        }
        url.set_path(self.database.as_deref().unwrap_or(""));
        if !self.options.is_empty() {
            url.query_pairs_mut().extend_pairs(self.options.iter());
        }
        // `***` is percent-encoded by the URL type; put it back so it reads as a mask.
        url.to_string().replace("%2A%2A%2A", "***")
    }
}

/// Every connection of a process, by name.
#[derive(Debug, Clone, Default)]
pub struct Connections {
    entries: BTreeMap<String, Connection>,
    /// The config file the `connections:` section came from, for hints.
    config_path: Option<String>,
    /// The `FLOWCTL_CONN_*` values that are secrets as a whole: a URI that holds a password or
    /// keys, and a definition that cannot be used (it may hold a password its parse missed).
    env_values: Vec<Secret>,
}

/// Why a connection cannot be used by a task; the message names the connection and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConnectionError(pub String);

impl Connections {
    /// The connections of a config file's section (`specs`, read from `config_path`) and of the
    /// `FLOWCTL_CONN_*` variables of `env`, whose secrets are read from `env` now. `services` are
    /// the names an `aws` connection's `endpoints:` may hold.
    pub fn resolve(
        specs: &BTreeMap<String, ConnectionSpec>,
        config_path: Option<String>,
        env: impl IntoIterator<Item = (String, String)>,
        services: Services<'_>,
    ) -> Connections {
        let env: BTreeMap<String, String> = env.into_iter().collect();
        let lookup = |name: &str| env.get(name).cloned();
        let file_source = config_path.clone().unwrap_or_else(|| "the config file".to_string());
        let mut entries = BTreeMap::new();
        let mut env_values = Vec::new();
        for (name, spec) in specs {
            let kind = resolve_spec(name, spec, &lookup);
            entries.insert(name.clone(), Connection { name: name.clone(), source: file_source.clone(), kind });
        }
        for (var, value) in &env {
            let Some(suffix) = var.strip_prefix(ENV_PREFIX) else { continue };
            if suffix.is_empty() {
                continue;
            }
            let name = suffix.to_ascii_lowercase();
            let kind = match parse_env_value(&name, value, services) {
                Ok((spec, literal_keys)) => match (resolve_spec(&name, &spec, &lookup), literal_keys) {
                    (ConnectionKind::Aws(mut aws), Some(keys)) => {
                        aws.keys = Some(keys);
                        ConnectionKind::Aws(aws)
                    }
                    (kind, _) => kind,
                },
                Err(message) => ConnectionKind::Broken(format!("${var}: {message}")),
            };
            // A URI carries its secrets in it (percent-encoded): the whole value is one too. A
            // JSON definition names the variables that hold them instead.
            let is_uri = !value.trim_start().starts_with('{');
            let holds_secret = match &kind {
                ConnectionKind::Broken(_) => true,
                ConnectionKind::Aws(aws) => is_uri && aws.keys.is_some(),
                ConnectionKind::Sql(sql) => is_uri && sql.password.is_some(),
            };
            if holds_secret {
                env_values.push(Secret::new(value.clone()));
            }
            entries.insert(name.clone(), Connection { name, source: format!("${var}"), kind });
        }
        Connections { entries, config_path, env_values }
    }

    /// Every secret value the connections hold, for the masker, which derives the forms they
    /// take (percent-encoded in a URI, base64, JSON-escaped): the keys and passwords, decoded,
    /// and each `FLOWCTL_CONN_*` value that holds one (a URI with a password or keys) or cannot
    /// be used (it may hold a password its parse could not find), whole.
    pub fn secrets(&self) -> Vec<String> {
        let mut out = Vec::new();
        for connection in self.entries.values() {
            match &connection.kind {
                ConnectionKind::Aws(aws) => {
                    if let Some(keys) = &aws.keys {
                        out.push(keys.access_key_id.expose().to_string());
                        out.push(keys.secret_access_key.expose().to_string());
                        out.extend(keys.session_token.as_ref().map(|t| t.expose().to_string()));
                    }
                }
                ConnectionKind::Sql(sql) => out.extend(sql.password.as_ref().map(|p| p.expose().to_string())),
                ConnectionKind::Broken(_) => {}
            }
        }
        out.extend(self.env_values.iter().map(|v| v.expose().to_string()));
        out
    }

    /// Every connection, by name. `aws_default` is listed as built in when nothing defines it.
    pub fn all(&self) -> Vec<Connection> {
        let mut all: Vec<Connection> = self.entries.values().cloned().collect();
        if !self.entries.contains_key(AWS_DEFAULT) {
            all.push(builtin_aws_default());
            all.sort_by(|a, b| a.name.cmp(&b.name));
        }
        all
    }

    /// The connection called `name`; `aws_default` exists even when nothing defines it.
    pub fn get(&self, name: &str) -> Result<Connection, ConnectionError> {
        let key = name.to_ascii_lowercase();
        if let Some(connection) = self.entries.get(&key) {
            return Ok(connection.clone());
        }
        if key == AWS_DEFAULT {
            return Ok(builtin_aws_default());
        }
        let defined: Vec<&str> = self.entries.keys().map(String::as_str).collect();
        let suggestion = crate::diagnostic::suggestion(&key, defined.iter().copied());
        let place = self.config_path.as_deref().unwrap_or("the config file");
        Err(ConnectionError(format!(
            "connection \"{name}\" is not defined{suggestion}; add it under `connections:` in {place} or set {ENV_PREFIX}{} (see {DOCS}){}",
            key.to_ascii_uppercase(),
            if defined.is_empty() { String::new() } else { format!("; defined: {}", defined.join(", ")) }
        )))
    }

    /// The AWS connection called `name`.
    pub fn aws(&self, name: &str) -> Result<AwsConnection, ConnectionError> {
        let connection = self.get(name)?;
        match connection.kind {
            ConnectionKind::Aws(aws) => Ok(aws),
            ConnectionKind::Broken(why) => Err(broken(&connection.name, &why)),
            other => Err(ConnectionError(format!(
                "connection \"{}\" ({}) is a {} connection, and this task needs an AWS one; name an aws connection in `connection:`",
                connection.name,
                connection.source,
                other.type_name()
            ))),
        }
    }

    /// The SQL connection called `name`.
    pub fn sql(&self, name: &str) -> Result<SqlConnection, ConnectionError> {
        let connection = self.get(name)?;
        match connection.kind {
            ConnectionKind::Sql(sql) => Ok(sql),
            ConnectionKind::Broken(why) => Err(broken(&connection.name, &why)),
            other => Err(ConnectionError(format!(
                "connection \"{}\" ({}) is an {} connection, and this task needs a mysql or postgres one; name a SQL connection in `connection:`",
                connection.name,
                connection.source,
                other.type_name()
            ))),
        }
    }
}

fn broken(name: &str, why: &str) -> ConnectionError {
    ConnectionError(format!("connection \"{name}\" cannot be used: {why}"))
}

fn builtin_aws_default() -> Connection {
    Connection {
        name: AWS_DEFAULT.to_string(),
        source: "built-in".to_string(),
        kind: ConnectionKind::Aws(AwsConnection { name: AWS_DEFAULT.to_string(), ..AwsConnection::default() }),
    }
}

/// Whether `name` may name a connection: lower-case letters, digits and `_`, starting with a
/// letter, so that `FLOWCTL_CONN_<NAME>` can define it too.
pub fn valid_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Whether `name` may name an environment variable.
fn valid_env_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// Checks the config file's `connections:` section: names, variable names, endpoints (their
/// service names among `services`). Returns the first problem with the key it is about.
pub fn check_specs(specs: &BTreeMap<String, ConnectionSpec>, services: Services<'_>) -> Result<(), String> {
    for (name, spec) in specs {
        if !valid_name(name) {
            return Err(format!(
                "connections.{name}: a connection's name is lower-case letters, digits and _, starting with a letter (so that {ENV_PREFIX}{} can define it too)",
                name.to_ascii_uppercase().replace(|c: char| !c.is_ascii_alphanumeric(), "_")
            ));
        }
        let env_keys: Vec<(&str, &Option<String>)> = match spec {
            ConnectionSpec::Aws(aws) => {
                for (service, url) in &aws.endpoints {
                    if !services.contains(&service.as_str()) {
                        return Err(format!(
                            "connections.{name}.endpoints.{service}: unknown service{}; the services are {}",
                            crate::diagnostic::suggestion(service, services.iter().copied()),
                            services.join(", ")
                        ));
                    }
                    check_endpoint(&format!("connections.{name}.endpoints.{service}"), url)?;
                }
                if let Some(url) = &aws.endpoint_url {
                    check_endpoint(&format!("connections.{name}.endpoint_url"), url)?;
                }
                match (&aws.access_key_id_env, &aws.secret_access_key_env) {
                    (Some(_), None) | (None, Some(_)) => {
                        return Err(format!(
                            "connections.{name}: access_key_id_env and secret_access_key_env go together; set both, or neither to use the default credential chain"
                        ))
                    }
                    _ => {}
                }
                if aws.session_token_env.is_some() && aws.access_key_id_env.is_none() {
                    return Err(format!("connections.{name}: session_token_env needs access_key_id_env and secret_access_key_env"));
                }
                vec![
                    ("access_key_id_env", &aws.access_key_id_env),
                    ("secret_access_key_env", &aws.secret_access_key_env),
                    ("session_token_env", &aws.session_token_env),
                ]
            }
            ConnectionSpec::Mysql(sql) | ConnectionSpec::Postgres(sql) => {
                if let Some(uri) = &sql.uri {
                    if sql.host.is_some() || sql.port.is_some() || sql.database.is_some() || sql.user.is_some() {
                        return Err(format!("connections.{name}: give either uri or host/port/user/database, not both"));
                    }
                    let parsed = url::Url::parse(uri).map_err(|e| format!("connections.{name}.uri: {e}; write it as mysql://user@host:3306/database"))?;
                    if parsed.password().is_some() {
                        return Err(format!(
                            "connections.{name}.uri holds a password; remove it from the file and name the variable that holds it with password_env"
                        ));
                    }
                }
                vec![("password_env", &sql.password_env)]
            }
        };
        for (key, value) in env_keys {
            if let Some(value) = value {
                if !valid_env_name(value) {
                    return Err(format!(
                        "connections.{name}.{key} must be the NAME of an environment variable (letters, digits, _), found \"{}\"; never put the secret itself in the config file",
                        if value.len() > 3 { "***" } else { value.as_str() }
                    ));
                }
            }
        }
    }
    Ok(())
}

fn check_endpoint(key: &str, url: &str) -> Result<(), String> {
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => Err(format!("{key}: \"{url}\" is not an endpoint URL; write it whole, e.g. http://127.0.0.1:5000 or https://s3.eu-west-1.amazonaws.com")),
    }
}

fn resolve_spec(name: &str, spec: &ConnectionSpec, env: &dyn Fn(&str) -> Option<String>) -> ConnectionKind {
    let secret_from = |key: &str, var: &Option<String>| -> Result<Option<Secret>, String> {
        match var {
            None => Ok(None),
            Some(var) => match env(var) {
                Some(value) if !value.is_empty() => Ok(Some(Secret::new(value))),
                _ => Err(format!("{key} names the environment variable {var}, which is not set; export it in flowctl's environment (the server's, for scheduled runs)")),
            },
        }
    };
    match spec {
        ConnectionSpec::Aws(aws) => {
            let keys = (|| -> Result<Option<AwsKeys>, String> {
                let id = secret_from("access_key_id_env", &aws.access_key_id_env)?;
                let secret = secret_from("secret_access_key_env", &aws.secret_access_key_env)?;
                let token = secret_from("session_token_env", &aws.session_token_env)?;
                Ok(match (id, secret) {
                    (Some(access_key_id), Some(secret_access_key)) => Some(AwsKeys { access_key_id, secret_access_key, session_token: token }),
                    _ => None,
                })
            })();
            match keys {
                Ok(keys) => ConnectionKind::Aws(AwsConnection {
                    name: name.to_string(),
                    region: aws.region.clone(),
                    profile: aws.profile.clone(),
                    endpoint_url: aws.endpoint_url.clone(),
                    endpoints: aws.endpoints.clone(),
                    keys,
                    role_arn: aws.role_arn.clone(),
                    external_id: aws.external_id.clone(),
                    role_session_name: aws.role_session_name.clone(),
                    force_path_style: aws.force_path_style,
                }),
                Err(why) => ConnectionKind::Broken(why),
            }
        }
        ConnectionSpec::Mysql(sql) | ConnectionSpec::Postgres(sql) => {
            let engine = if matches!(spec, ConnectionSpec::Mysql(_)) { SqlEngine::Mysql } else { SqlEngine::Postgres };
            let password = match secret_from("password_env", &sql.password_env) {
                Ok(p) => p,
                Err(why) => return ConnectionKind::Broken(why),
            };
            let mut connection = SqlConnection {
                name: name.to_string(),
                engine,
                host: sql.host.clone().unwrap_or_else(|| "localhost".to_string()),
                port: sql.port.unwrap_or_else(|| engine.default_port()),
                user: sql.user.clone(),
                password,
                database: sql.database.clone(),
                options: sql.options.clone(),
            };
            if let Some(uri) = &sql.uri {
                match sql_from_url(name, engine, uri) {
                    Ok(from_uri) => {
                        let password = connection.password.take().or(from_uri.password.clone());
                        let mut options = from_uri.options.clone();
                        options.extend(connection.options);
                        connection = SqlConnection { password, options, ..from_uri };
                    }
                    Err(why) => return ConnectionKind::Broken(why),
                }
            }
            ConnectionKind::Sql(connection)
        }
    }
}

/// Parses a `FLOWCTL_CONN_*` value: JSON when it starts with `{`, else a URI. AWS keys written in
/// an `aws://` URI itself come back beside the settings.
fn parse_env_value(name: &str, value: &str, services: Services<'_>) -> Result<(ConnectionSpec, Option<AwsKeys>), String> {
    let value = value.trim();
    if value.starts_with('{') {
        let spec: ConnectionSpec = serde_json::from_str(value).map_err(|e| {
            format!("the JSON is not a connection ({e}); write e.g. {{\"type\": \"aws\", \"region\": \"eu-west-1\"}} (see {DOCS})")
        })?;
        check_specs(&BTreeMap::from([(name.to_string(), spec.clone())]), services)?;
        return Ok((spec, None));
    }
    // Airflow writes AWS keys as `aws://KEY:SECRET@/?...`, with no host, which URL parsers
    // refuse: give it a placeholder host, never used.
    let value = match value.split_once("@/") {
        Some((head, tail)) if head.starts_with("aws://") && !head["aws://".len()..].contains('/') => {
            format!("{head}@aws/{tail}")
        }
        _ => value.to_string(),
    };
    let value = value.as_str();
    let url = url::Url::parse(value).map_err(|e| {
        format!("not a connection URI ({e}); write e.g. aws://?region=eu-west-1 or mysql://user:password@host:3306/database (see {DOCS})")
    })?;
    match url.scheme() {
        "aws" => aws_from_url(name, &url, services),
        "mysql" | "mariadb" => Ok((ConnectionSpec::Mysql(SqlSpec { uri: Some(value.to_string()), ..SqlSpec::default() }), None)),
        "postgres" | "postgresql" => Ok((ConnectionSpec::Postgres(SqlSpec { uri: Some(value.to_string()), ..SqlSpec::default() }), None)),
        other => Err(format!("unknown connection type \"{other}\" in the URI; the types are aws, mysql (or mariadb) and postgres (see {DOCS})")),
    }
}

/// `aws://[ACCESS_KEY_ID:SECRET@]/?region=..&endpoint_url=..&force_path_style=true&...`: keys in
/// the URI are taken as they are (the variable itself is the secret); every other setting is a
/// query parameter named as in the config file (`region_name` is read as `region`, as Airflow
/// writes it).
fn aws_from_url(name: &str, url: &url::Url, services: Services<'_>) -> Result<(ConnectionSpec, Option<AwsKeys>), String> {
    let mut spec = AwsSpec::default();
    let literal_keys = match (url.username(), url.password()) {
        ("", None) => None,
        (id, Some(secret)) if !id.is_empty() => Some(AwsKeys {
            access_key_id: Secret::new(percent_decode(id)),
            secret_access_key: Secret::new(percent_decode(secret)),
            session_token: None,
        }),
        _ => return Err("the URI has an access key id without its secret (or the reverse); write aws://ACCESS_KEY_ID:SECRET_ACCESS_KEY@/?region=...".into()),
    };
    for (key, value) in url.query_pairs() {
        let value = value.into_owned();
        match key.as_ref() {
            "region" | "region_name" => spec.region = Some(value),
            "profile" | "profile_name" => spec.profile = Some(value),
            "endpoint_url" => spec.endpoint_url = Some(value),
            "role_arn" => spec.role_arn = Some(value),
            "external_id" => spec.external_id = Some(value),
            "role_session_name" => spec.role_session_name = Some(value),
            "access_key_id_env" => spec.access_key_id_env = Some(value),
            "secret_access_key_env" => spec.secret_access_key_env = Some(value),
            "session_token_env" => spec.session_token_env = Some(value),
            "force_path_style" => {
                spec.force_path_style = match value.as_str() {
                    "true" | "1" | "yes" => true,
                    "false" | "0" | "no" => false,
                    _ => return Err(format!("force_path_style=\"{value}\": write true or false")),
                }
            }
            other => match other.strip_prefix("endpoint_url_") {
                Some(service) => {
                    spec.endpoints.insert(service.to_string(), value);
                }
                None => {
                    let known = ["region", "profile", "endpoint_url", "endpoint_url_<service>", "role_arn", "external_id", "role_session_name", "force_path_style"];
                    return Err(format!(
                        "unknown URI parameter \"{other}\"{}; the parameters are {}",
                        crate::diagnostic::suggestion(other, known.iter().copied()),
                        known.join(", ")
                    ));
                }
            },
        }
    }
    check_specs(&BTreeMap::from([(name.to_string(), ConnectionSpec::Aws(spec.clone()))]), services)?;
    Ok((ConnectionSpec::Aws(spec), literal_keys))
}

/// A SQL connection from its URI; a password in it is kept as a secret (an environment
/// variable's URI may carry one; the config file's may not).
fn sql_from_url(name: &str, engine: SqlEngine, uri: &str) -> Result<SqlConnection, String> {
    let url = url::Url::parse(uri).map_err(|e| format!("uri \"{uri}\": {e}"))?;
    let decode = |s: &str| percent_decode(s);
    let database = url.path().trim_start_matches('/');
    Ok(SqlConnection {
        name: name.to_string(),
        engine,
        host: url.host_str().filter(|h| !h.is_empty()).unwrap_or("localhost").to_string(),
        port: url.port().unwrap_or_else(|| engine.default_port()),
        user: Some(url.username()).filter(|u| !u.is_empty()).map(decode),
        password: url.password().map(|p| Secret::new(decode(p))),
        database: Some(database).filter(|d| !d.is_empty()).map(decode),
        options: url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect(),
    })
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// The services the tests' operators would declare (the engine knows no real ones).
    const SERVICES: Services<'static> = &["storage", "queue", "warehouse"];

    fn specs(yaml: &str) -> BTreeMap<String, ConnectionSpec> {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn aws_default_exists_when_nothing_defines_it() {
        let c = Connections::resolve(&BTreeMap::new(), None, env(&[]), SERVICES);
        let aws = c.aws("aws_default").unwrap();
        assert!(aws.keys.is_none() && aws.region.is_none() && !aws.force_path_style);
        assert_eq!(c.all().len(), 1);
        assert_eq!(c.all()[0].source, "built-in");
    }

    #[test]
    fn a_config_connection_reads_its_keys_from_the_variables_it_names() {
        let specs = specs(
            "moto:\n  type: aws\n  region: us-east-1\n  endpoint_url: http://127.0.0.1:5000\n  endpoints: {storage: 'http://127.0.0.1:5001'}\n  access_key_id_env: K\n  secret_access_key_env: S\n  force_path_style: true\n",
        );
        check_specs(&specs, SERVICES).unwrap();
        let c = Connections::resolve(&specs, Some("/h/config.yaml".into()), env(&[("K", "AKIDCANARY"), ("S", "secret-canary")]), SERVICES);
        let aws = c.aws("moto").unwrap();
        assert_eq!(aws.endpoint_for("storage"), Some("http://127.0.0.1:5001"));
        assert_eq!(aws.endpoint_for("queue"), Some("http://127.0.0.1:5000"));
        assert_eq!(aws.keys.as_ref().unwrap().secret_access_key.expose(), "secret-canary");
        assert!(!format!("{aws:?}").contains("canary"), "Debug must not show secrets");
        let mut secrets = c.secrets();
        secrets.sort();
        assert_eq!(secrets, ["AKIDCANARY", "secret-canary"]);
    }

    #[test]
    fn a_missing_variable_breaks_only_its_connection_and_says_which() {
        let specs = specs("a:\n  type: aws\n  access_key_id_env: K\n  secret_access_key_env: S\nb:\n  type: aws\n  region: eu-west-1\n");
        let c = Connections::resolve(&specs, None, env(&[("K", "x")]), SERVICES);
        assert_eq!(
            c.aws("a").unwrap_err().0,
            "connection \"a\" cannot be used: secret_access_key_env names the environment variable S, which is not set; export it in flowctl's environment (the server's, for scheduled runs)"
        );
        assert_eq!(c.aws("b").unwrap().region.as_deref(), Some("eu-west-1"));
    }

    #[test]
    fn environment_variables_define_connections_and_win_over_the_file() {
        let specs = specs("warehouse:\n  type: postgres\n  host: file-host\n");
        let c = Connections::resolve(
            &specs,
            None,
            env(&[
                ("FLOWCTL_CONN_WAREHOUSE", "postgresql://etl:pa%3Ass@wh.internal:6543/dw?sslmode=require"),
                ("FLOWCTL_CONN_RDS", r#"{"type": "mysql", "host": "rds", "user": "loader", "database": "loans"}"#),
                ("FLOWCTL_CONN_LOCAL", "aws://AKIDLOCAL:local%2Fsecret@/?region_name=eu-west-1&endpoint_url_storage=http://localhost:5000&force_path_style=true"),
            ]),
            SERVICES,
        );
        let wh = c.sql("warehouse").unwrap();
        assert_eq!((wh.engine, wh.host.as_str(), wh.port, wh.database.as_deref()), (SqlEngine::Postgres, "wh.internal", 6543, Some("dw")));
        assert_eq!(wh.password.as_ref().unwrap().expose(), "pa:ss");
        assert_eq!(wh.display_url(), "postgres://etl:***@wh.internal:6543/dw?sslmode=require");
        assert!(wh.url().starts_with("postgres://etl:pa%3Ass@wh.internal:6543/dw"), "{}", wh.url());
        assert_eq!(c.get("warehouse").unwrap().source, "$FLOWCTL_CONN_WAREHOUSE");
        let rds = c.sql("rds").unwrap();
        assert_eq!((rds.engine, rds.port, rds.user.as_deref()), (SqlEngine::Mysql, 3306, Some("loader")));
        let local = c.aws("local").unwrap();
        assert_eq!(local.region.as_deref(), Some("eu-west-1"));
        assert_eq!(local.endpoint_for("storage"), Some("http://localhost:5000"));
        assert!(local.force_path_style);
        assert_eq!(local.keys.as_ref().unwrap().secret_access_key.expose(), "local/secret");
        assert!(c.secrets().contains(&"pa:ss".to_string()));
    }

    #[test]
    fn a_uri_that_holds_a_secret_is_a_secret_whole() {
        let uri = "mysql://loader:Zq7%2Fpl%2Bus%20sp%25ce%22quo%5Cte-canary@db:3306/loans";
        let keys = "aws://AKIDCANARY:key%2Fcanary@/?region=eu-west-1";
        let broken = "ftp://user:ftp-canary@host";
        let json = r#"{"type": "mysql", "host": "rds", "password_env": "RDS_PASS"}"#;
        let c = Connections::resolve(
            &BTreeMap::new(),
            None,
            env(&[
                ("FLOWCTL_CONN_LOANS", uri),
                ("FLOWCTL_CONN_LAKE", keys),
                ("FLOWCTL_CONN_FTP", broken),
                ("FLOWCTL_CONN_RDS", json),
                ("FLOWCTL_CONN_PLAIN", "postgres://etl@wh:5432/dw"),
                ("RDS_PASS", "rds-canary"),
            ]),
            SERVICES,
        );
        let mut secrets = c.secrets();
        secrets.sort();
        // The password decoded, as the masker derives its encodings from the value itself; the
        // variables' values whole; a JSON definition and a URI without a secret are not secrets.
        let mut expected = vec![r#"Zq7/pl+us sp%ce"quo\te-canary"#, "AKIDCANARY", "key/canary", "rds-canary", uri, keys, broken];
        expected.sort();
        assert_eq!(secrets, expected);
    }

    #[test]
    fn broken_environment_definitions_say_what_is_wrong() {
        let c = Connections::resolve(
            &BTreeMap::new(),
            None,
            env(&[
                ("FLOWCTL_CONN_FTP", "ftp://x"),
                ("FLOWCTL_CONN_TYPO", "aws://?regoin=eu-west-1"),
                ("FLOWCTL_CONN_JSON", "{\"type\": \"aws\", \"regoin\": 1}"),
            ]),
            SERVICES,
        );
        assert!(c.aws("ftp").unwrap_err().0.contains("unknown connection type \"ftp\""));
        let typo = c.aws("typo").unwrap_err().0;
        assert!(typo.contains("unknown URI parameter \"regoin\" (did you mean \"region\"?)"), "{typo}");
        assert!(c.aws("json").unwrap_err().0.contains("unknown field `regoin`"));
    }

    #[test]
    fn unknown_names_and_wrong_types_say_what_to_do() {
        let specs = specs("rds:\n  type: mysql\n");
        let c = Connections::resolve(&specs, Some("/h/config.yaml".into()), env(&[]), SERVICES);
        assert_eq!(
            c.sql("rsd").unwrap_err().0,
            "connection \"rsd\" is not defined (did you mean \"rds\"?); add it under `connections:` in /h/config.yaml or set FLOWCTL_CONN_RSD (see docs/connections.md); defined: rds"
        );
        assert!(c.aws("rds").unwrap_err().0.contains("is a mysql connection, and this task needs an AWS one"));
        assert!(c.sql("aws_default").unwrap_err().0.contains("is an aws connection"));
    }

    #[test]
    fn the_file_never_holds_a_secret_or_a_bad_name() {
        let err = check_specs(&specs("rds:\n  type: mysql\n  uri: mysql://u:hunter2@h/db\n"), SERVICES).unwrap_err();
        assert!(err.contains("holds a password") && !err.contains("hunter2"), "{err}");
        let err = check_specs(&specs("a:\n  type: aws\n  access_key_id_env: AKIA/secret value\n  secret_access_key_env: S\n"), SERVICES).unwrap_err();
        assert!(err.contains("must be the NAME of an environment variable") && !err.contains("secret value"), "{err}");
        let err = check_specs(&specs("a:\n  type: aws\n  access_key_id_env: K\n"), SERVICES).unwrap_err();
        assert!(err.contains("go together"), "{err}");
        let err = check_specs(&specs("Data-Lake:\n  type: aws\n"), SERVICES).unwrap_err();
        assert!(err.contains("FLOWCTL_CONN_DATA_LAKE"), "{err}");
        let err = check_specs(&specs("a:\n  type: aws\n  endpoints: {storag: 'http://x'}\n"), SERVICES).unwrap_err();
        assert!(err.starts_with("connections.a.endpoints.storag: unknown service (did you mean \"storage\"?)") && err.contains("storage, queue, warehouse"), "{err}");
        let err = check_specs(&specs("a:\n  type: aws\n  endpoint_url: localhost:5000\n"), SERVICES).unwrap_err();
        assert!(err.contains("is not an endpoint URL"), "{err}");
    }
}
