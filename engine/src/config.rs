//! The global config file: settings that belong to an installation, not to a DAG.
//!
//! A DAG file says *who* gets an alert; the SMTP server, its credentials and the default
//! recipients are the same for every DAG of a home, and must never be written in a DAG file that
//! is committed to a repository. They live in `<home>/config.yaml`, or in the file `--config`
//! names. Sections: `smtp:`, `alerts:` and `connections:` (AWS and SQL connections, see
//! [`crate::connections`]).
//!
//! The file is read with serde_yaml and `deny_unknown_fields`, so a typo is an error with the
//! file, line and column, like a DAG file's. Secrets are never in the file: `password_env` names
//! the environment variable that holds the SMTP password, and a connection's `*_env` keys name the
//! variables that hold its keys and passwords.

use std::path::{Path, PathBuf};

use lettre::message::Mailbox;
use serde::{Deserialize, Deserializer};

use crate::connections::{ConnectionSpec, Connections, Services};
use crate::diagnostic::suggestion;

/// The config file's name inside the home.
pub const CONFIG_FILE: &str = "config.yaml";

/// Where the config file is documented, for hints.
const DOCS: &str = "docs/config.md";

/// The whole config file. A missing file is an empty config: no alerts are sent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `smtp:`: the server alert emails go through.
    #[serde(default)]
    pub smtp: Option<SmtpConfig>,
    /// `alerts:`: defaults for every DAG's alerts.
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// `connections:`: named AWS and SQL connections tasks refer to with `connection:`.
    #[serde(default)]
    pub connections: std::collections::BTreeMap<String, ConnectionSpec>,
    /// `metrics:`: who may read the server's `/metrics` (`token`, the default, or `public`).
    #[serde(default)]
    pub metrics: MetricsAccess,
    /// The file this config was looked for in; messages name it.
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// Whether that file existed.
    #[serde(skip)]
    pub found: bool,
    /// The services an `aws` connection's `endpoints:` may name (what the operators declared),
    /// kept for the connections defined in the environment.
    #[serde(skip)]
    pub services: Vec<String>,
}

/// Who may read the server's `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MetricsAccess {
    /// Whoever has the API's bearer token, like every other endpoint.
    #[default]
    Token,
    /// Anyone who reaches the server (a Prometheus that cannot send a token).
    Public,
}

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// Plain text from start to end (a local relay).
    None,
    /// Plain text, upgraded with STARTTLS before anything else is sent (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

impl TlsMode {
    /// The name in the config file.
    pub fn name(self) -> &'static str {
        match self {
            TlsMode::None => "none",
            TlsMode::Starttls => "starttls",
            TlsMode::Tls => "tls",
        }
    }

    /// The usual port for this mode.
    pub fn default_port(self) -> u16 {
        match self {
            TlsMode::None => 25,
            TlsMode::Starttls => 587,
            TlsMode::Tls => 465,
        }
    }
}

/// `smtp:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// The server's host name (also the name its TLS certificate must carry).
    pub host: String,
    /// The port [default: 25, 587 or 465 by `tls`].
    #[serde(default)]
    pub port: Option<u16>,
    /// `none`, `starttls` (default) or `tls`.
    #[serde(default)]
    pub tls: TlsMode,
    /// The user to log in as; no login when absent.
    #[serde(default)]
    pub username: Option<String>,
    /// The name of the environment variable holding the password (never the password itself).
    #[serde(default)]
    pub password_env: Option<String>,
    /// The sender, `alerts@example.com` or `flowctl <alerts@example.com>`.
    pub from: Address,
    /// A PEM file of certificates to trust besides the usual public ones: the server's own
    /// self-signed certificate, or a private CA's. Relative to the config file's folder.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl SmtpConfig {
    /// The port to connect to.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or_else(|| self.tls.default_port())
    }
}

/// `alerts:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Who gets alert emails when a DAG's `alerts.email` has no `to:`.
    #[serde(default)]
    pub to: Vec<Address>,
    /// The web UI's address; messages link to the run at `<ui_url>/dags/<dag>/runs/<run>`.
    #[serde(default)]
    pub ui_url: Option<HttpUrl>,
}

/// An email address, checked when the file is read so a mistake has its line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address(pub Mailbox);

impl Address {
    /// The address as written.
    pub fn to_text(&self) -> String {
        self.0.to_string()
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Checked inside the visitor, so serde_yaml gives the error the value's position.
        deserializer.deserialize_str(CheckedStr(|text: &str| {
            text.trim().parse::<Mailbox>().map(Address).map_err(|_| {
                format!("\"{text}\" is not an email address; write it as name@example.com or \"Name <name@example.com>\"")
            })
        }))
    }
}

/// A visitor for a string checked by a function.
struct CheckedStr<F>(F);

impl<T, F: FnOnce(&str) -> Result<T, String>> serde::de::Visitor<'_> for CheckedStr<F> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
        (self.0)(v).map_err(E::custom)
    }
}

/// An `http://` or `https://` URL, without a trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl(pub String);

impl<'de> Deserialize<'de> for HttpUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(CheckedStr(|text: &str| {
            if !(text.starts_with("http://") || text.starts_with("https://")) || text.len() <= "https://".len() {
                return Err(format!("\"{text}\" is not a web address; write the whole URL, e.g. https://flowctl.example.com"));
            }
            Ok(HttpUrl(text.trim_end_matches('/').to_string()))
        }))
    }
}

/// Why the config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists (or was named with `--config`) and cannot be read.
    #[error("cannot read config file {}: {source}; {hint}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
        /// What to do.
        hint: &'static str,
    },
    /// The file is not valid YAML, or a key or value is wrong.
    #[error("{}:{line}:{column}: {message}\n  hint: {hint}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong, naming the key.
        message: String,
        /// How to fix it.
        hint: String,
    },
    /// Settings that are each well-formed but do not go together.
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl Config {
    /// The config file to read: the `--config` flag, else `<home>/config.yaml`.
    pub fn path(home: &Path, flag: Option<&Path>) -> PathBuf {
        flag.map_or_else(|| home.join(CONFIG_FILE), Path::to_path_buf)
    }

    /// Reads the config file. A missing `<home>/config.yaml` is an empty config; a file named
    /// with `--config` must exist. `services` are the names an `aws` connection's `endpoints:`
    /// may hold ([`crate::operator::Registry::aws_services`]).
    pub fn load(home: &Path, flag: Option<&Path>, services: Services<'_>) -> Result<Config, ConfigError> {
        let path = Config::path(home, flag);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && flag.is_none() => {
                return Ok(Config { source: Some(path), services: services.iter().map(|s| s.to_string()).collect(), ..Config::default() })
            }
            Err(source) => {
                let hint = if flag.is_some() {
                    "check the path given with --config"
                } else {
                    "check the file's permissions, or name another file with --config"
                };
                return Err(ConfigError::Read { path, source, hint });
            }
        };
        Config::parse(&path, &text, services)
    }

    /// The connections of this config's `connections:` and of this process's `FLOWCTL_CONN_*`
    /// variables, whose secrets are read from the environment now.
    pub fn connections(&self) -> Connections {
        let services: Vec<&str> = self.services.iter().map(String::as_str).collect();
        Connections::resolve(&self.connections, self.source.as_ref().map(|p| p.display().to_string()), std::env::vars(), &services)
    }

    /// Parses the text of a config file read from `path` (used for messages and for relative
    /// paths in it).
    pub fn parse(path: &Path, text: &str, services: Services<'_>) -> Result<Config, ConfigError> {
        // A file of only comments (or nothing) is an empty config.
        let empty = text.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#') || l.trim() == "---");
        let mut config = if empty {
            Config::default()
        } else {
            serde_yaml::from_str::<Config>(text).map_err(|e| syntax_error(path, &e))?
        };
        config.source = Some(path.to_path_buf());
        config.found = true;
        config.services = services.iter().map(|s| s.to_string()).collect();
        let invalid = |message: String| ConfigError::Invalid { path: path.to_path_buf(), message };
        crate::connections::check_specs(&config.connections, services).map_err(|m| invalid(format!("{m} (see docs/connections.md)")))?;
        if let Some(smtp) = &mut config.smtp {
            if smtp.host.trim().is_empty() {
                return Err(invalid("smtp.host is empty; set it to the SMTP server's host name".into()));
            }
            match (&smtp.username, &smtp.password_env) {
                (Some(user), None) => {
                    return Err(invalid(format!(
                        "smtp.username is \"{user}\" but smtp.password_env is missing; set password_env to the name of the environment variable that holds the password, e.g. password_env: SMTP_PASSWORD"
                    )))
                }
                (None, Some(_)) => {
                    return Err(invalid(
                        "smtp.password_env is set but smtp.username is missing; add the user to log in as".into(),
                    ))
                }
                _ => {}
            }
            if let Some(name) = &smtp.password_env {
                let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !valid {
                    return Err(invalid(format!(
                        "smtp.password_env must be the NAME of an environment variable (letters, digits, _), found \"{}\"; never put the password itself in the config file",
                        if name.len() > 3 { "***" } else { name.as_str() }
                    )));
                }
            }
            if smtp.username.is_some() && smtp.tls == TlsMode::None {
                return Err(invalid(
                    "smtp.username is set with tls: none, which would send the password in clear text; use tls: starttls (port 587) or tls: tls (port 465)".into(),
                ));
            }
            if let Some(ca) = &smtp.ca_file {
                let resolved = match path.parent() {
                    Some(dir) if ca.is_relative() => dir.join(ca),
                    _ => ca.clone(),
                };
                match std::fs::read_to_string(&resolved) {
                    Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => {}
                    Ok(_) => {
                        return Err(invalid(format!(
                            "smtp.ca_file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----); give the server's certificate or its CA's, in PEM",
                            resolved.display()
                        )))
                    }
                    Err(e) => {
                        return Err(invalid(format!("smtp.ca_file {}: {e}; check the path (relative paths start at the config file's folder)", resolved.display())))
                    }
                }
                smtp.ca_file = Some(resolved);
            }
        }
        Ok(config)
    }

    /// The config file's path, for messages.
    pub fn describe_source(&self) -> String {
        self.source.as_ref().map_or_else(|| "the config file".to_string(), |p| p.display().to_string())
    }
}

/// The keys each section accepts, for "did you mean" hints.
const SECTION_KEYS: &[(&str, &[&str])] = &[
    ("", &["smtp", "alerts", "connections"]),
    ("smtp", &["host", "port", "tls", "username", "password_env", "from", "ca_file"]),
    ("alerts", &["to", "ui_url"]),
];

fn syntax_error(path: &Path, error: &serde_yaml::Error) -> ConfigError {
    let (line, column) = error.location().map_or((1, 1), |l| (l.line(), l.column()));
    let mut message = error.to_string();
    // serde_yaml appends " at line L column C"; the position leads the line instead.
    if let Some(at) = message.rfind(" at line ") {
        message.truncate(at);
    }
    // "smtp: unknown field `hots`, expected one of ..." -> name the section and suggest a key.
    let mut hint = format!("see {DOCS} for every key of the config file");
    if let Some(rest) = message.find("unknown field `").map(|i| &message[i + "unknown field `".len()..]) {
        let field = rest.split('`').next().unwrap_or_default().to_string();
        let section = message.split(": unknown field").next().filter(|s| !s.contains('`')).unwrap_or("");
        let section = if message.starts_with("unknown field") { String::new() } else { section.to_string() };
        let section = section.as_str();
        if let Some((_, keys)) = SECTION_KEYS.iter().find(|(name, _)| *name == section) {
            let place = if section.is_empty() { "at the top level".to_string() } else { format!("in `{section}:`") };
            message = format!("unknown key \"{field}\" {place}{}", suggestion(&field, keys.iter().copied()));
            hint = format!("{} accepts: {}; see {DOCS}", if section.is_empty() { "the file" } else { section }, keys.join(", "));
        }
    } else if message.contains("missing field `") {
        hint = format!("add the key; see {DOCS} for a complete example");
    } else if message.contains("unknown variant") && message.contains("tls") {
        hint = "tls is none, starttls (port 587) or tls (port 465)".into();
    }
    ConfigError::Syntax { path: path.to_path_buf(), line, column, message, hint }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("/h/config.yaml"), text, &[]).map_err(|e| e.to_string())
    }

    #[test]
    fn a_complete_file_reads_with_defaults() {
        let config = parse(
            "smtp:\n  host: mail.example.com\n  username: flowctl\n  password_env: SMTP_PASSWORD\n  from: flowctl <alerts@example.com>\nalerts:\n  to: [data@example.com]\n  ui_url: https://flowctl.example.com/\n",
        )
        .unwrap();
        let smtp = config.smtp.unwrap();
        assert_eq!((smtp.tls, smtp.port()), (TlsMode::Starttls, 587));
        assert_eq!(smtp.from.0.email.to_string(), "alerts@example.com");
        assert_eq!(config.alerts.to[0].to_text(), "data@example.com");
        assert_eq!(config.alerts.ui_url.unwrap().0, "https://flowctl.example.com");
    }

    #[test]
    fn an_empty_or_commented_file_is_an_empty_config() {
        assert!(parse("").unwrap().smtp.is_none());
        assert!(parse("# nothing yet\n\n").unwrap().alerts.to.is_empty());
    }

    #[test]
    fn an_unknown_key_names_its_place_and_suggests_the_key() {
        let err = parse("smtp:\n  hots: mail.example.com\n  from: a@example.com\n").unwrap_err();
        assert!(err.starts_with("/h/config.yaml:2:3: unknown key \"hots\" in `smtp:` (did you mean \"host\"?)"), "{err}");
        assert!(err.contains("hint: smtp accepts: host, port"), "{err}");
        let err = parse("alert:\n  to: [a@example.com]\n").unwrap_err();
        assert!(err.starts_with("/h/config.yaml:1:1: unknown key \"alert\" at the top level (did you mean \"alerts\"?)"), "{err}");
        let err = parse("connections:\n  warehouse:\n    type: aws\n    regoin: eu-west-1\n").unwrap_err();
        assert!(err.contains("unknown field `regoin`"), "{err}");
        let err = parse("connections:\n  warehouse:\n    type: oracle\n").unwrap_err();
        assert!(err.contains("unknown variant `oracle`"), "{err}");
    }

    #[test]
    fn bad_values_have_their_line_and_column() {
        let err = parse("smtp:\n  host: h\n  from: a@example.com\n  tls: ssl\n").unwrap_err();
        assert!(err.starts_with("/h/config.yaml:4:8: smtp.tls: unknown variant `ssl`"), "{err}");
        assert!(err.contains("hint: tls is none, starttls (port 587) or tls (port 465)"), "{err}");
        let err = parse("smtp:\n  host: h\n  from: alerts.example.com\n").unwrap_err();
        assert!(err.starts_with("/h/config.yaml:3:9: smtp.from: \"alerts.example.com\" is not an email address"), "{err}");
        let err = parse("smtp:\n  host: h\n  from: a@example.com\n  port: seven\n").unwrap_err();
        assert!(err.starts_with("/h/config.yaml:4:9: smtp.port: invalid type"), "{err}");
        let err = parse("smtp:\n  port: 25\n  from: a@example.com\n").unwrap_err();
        assert!(err.contains("missing field `host`"), "{err}");
        let err = parse("smtp:\n  host: a: b\n").unwrap_err();
        assert!(err.starts_with("/h/config.yaml:2:10: mapping values are not allowed"), "{err}");
    }

    #[test]
    fn settings_that_do_not_go_together_are_errors() {
        let err = parse("smtp:\n  host: h\n  from: a@example.com\n  username: u\n").unwrap_err();
        assert!(err.contains("password_env is missing"), "{err}");
        let err = parse("smtp:\n  host: h\n  from: a@example.com\n  username: u\n  password_env: hunter2 secret\n").unwrap_err();
        assert!(err.contains("must be the NAME of an environment variable") && !err.contains("hunter2"), "{err}");
        let err = parse("smtp:\n  host: h\n  tls: none\n  from: a@example.com\n  username: u\n  password_env: P\n").unwrap_err();
        assert!(err.contains("clear text"), "{err}");
        let err = parse("smtp:\n  host: h\n  from: a@example.com\n  ca_file: missing.pem\n").unwrap_err();
        assert!(err.contains("smtp.ca_file /h/missing.pem"), "{err}");
    }

    #[test]
    fn a_missing_default_file_is_fine_but_a_named_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Config::load(dir.path(), None, &[]).unwrap().smtp.is_none());
        let named = dir.path().join("other.yaml");
        let err = Config::load(dir.path(), Some(&named), &[]).unwrap_err().to_string();
        assert!(err.starts_with(&format!("cannot read config file {}", named.display())) && err.contains("--config"), "{err}");
    }
}
