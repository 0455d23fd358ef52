//! Sending one email through the configured SMTP server, step by step (connect, STARTTLS, login,
//! send), so that a failure says which step failed and what to change: `cannot connect to the
//! SMTP server mail.example.com:587`, `TLS with ... failed: invalid peer certificate`,
//! `authentication failed for user X`. Both the dispatcher and `flowctl alert test` send through
//! here, so the test command tells the truth about what alerts will do.
//!
//! Errors are marked retryable (the network, a 4xx answer) or final (a refused login, a bad
//! certificate, a 5xx answer): only the first kind is worth the dispatcher's next try.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::Message;

use crate::config::{Config, SmtpConfig, TlsMode};

/// How long a TCP connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one whole try (connect, TLS, login, send) may take.
pub const TRY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a message was not sent, said for the person who has to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    /// What went wrong and what to change; never holds the password.
    pub message: String,
    /// Whether another try may succeed (network trouble, a 4xx answer).
    pub retryable: bool,
}

impl SendError {
    /// A failure that another try will not fix.
    pub fn fatal(message: impl Into<String>) -> Self {
        SendError { message: message.into(), retryable: false }
    }

    /// A failure that another try may not meet.
    pub fn retryable(message: impl Into<String>) -> Self {
        SendError { message: message.into(), retryable: true }
    }
}

/// A login: the user, the password and the environment variable it came from.
#[derive(Clone)]
struct Login {
    user: String,
    password: String,
    env: String,
}

/// The SMTP server alert emails go through, ready to send.
#[derive(Clone)]
pub struct Smtp {
    host: String,
    port: u16,
    tls: TlsMode,
    login: Option<Login>,
    from: Mailbox,
    ca: Option<(String, Vec<u8>)>,
    /// The config file, named in messages.
    file: String,
}

impl std::fmt::Debug for Smtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Smtp").field("server", &self.describe()).finish_non_exhaustive()
    }
}

impl Smtp {
    /// The server of `config`'s `smtp:` section, with the password read from its environment
    /// variable. Errors say what is missing: the section, or the variable.
    pub fn from_config(config: &Config) -> Result<Smtp, SendError> {
        let file = config.describe_source();
        let Some(smtp) = &config.smtp else {
            let where_ = if config.found {
                format!("{file} has no `smtp:` section")
            } else {
                format!("there is no config file ({file})")
            };
            return Err(SendError::fatal(format!(
                "{where_}, so no email can be sent; add an smtp: section with host and from (see docs/config.md)"
            )));
        };
        Smtp::new(smtp, &file)
    }

    fn new(smtp: &SmtpConfig, file: &str) -> Result<Smtp, SendError> {
        let login = match (&smtp.username, &smtp.password_env) {
            (Some(user), Some(env)) => match std::env::var(env) {
                Ok(password) if !password.is_empty() => Some(Login { user: user.clone(), password, env: env.clone() }),
                _ => {
                    return Err(SendError::fatal(format!(
                        "smtp.password_env in {file} names the environment variable {env}, which is not set (or empty) for flowctl; export {env} with the password of {user} before running flowctl"
                    )))
                }
            },
            _ => None,
        };
        let ca = match &smtp.ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    SendError::fatal(format!("cannot read smtp.ca_file {}: {e}; check the path in {file}", path.display()))
                })?;
                Some((path.display().to_string(), pem))
            }
            None => None,
        };
        Ok(Smtp {
            host: smtp.host.clone(),
            port: smtp.port(),
            tls: smtp.tls,
            login,
            from: smtp.from.0.clone(),
            ca,
            file: file.to_string(),
        })
    }

    /// The password, to be added to the masker.
    pub fn password(&self) -> Option<&str> {
        self.login.as_ref().map(|l| l.password.as_str())
    }

    /// `mail.example.com:587 (starttls, user flowctl)`.
    pub fn describe(&self) -> String {
        let user = self.login.as_ref().map(|l| format!(", user {}", l.user)).unwrap_or_default();
        format!("{}:{} ({}{user})", self.host, self.port, self.tls.name())
    }

    fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Sends one plain-text message to `to`, within [`TRY_TIMEOUT`].
    pub async fn send(&self, to: &[Mailbox], subject: &str, body: String) -> Result<(), SendError> {
        if to.is_empty() {
            return Err(SendError::fatal("the message has no recipients"));
        }
        let mut builder = Message::builder().from(self.from.clone()).subject(subject).header(ContentType::TEXT_PLAIN);
        for recipient in to {
            builder = builder.to(recipient.clone());
        }
        let message = builder.body(body).map_err(|e| SendError::fatal(format!("cannot build the message: {e}")))?;
        match tokio::time::timeout(TRY_TIMEOUT, self.deliver(&message)).await {
            Ok(result) => result,
            Err(_) => Err(SendError::retryable(format!(
                "the SMTP server {} did not finish within {}s; check that smtp.host and smtp.port in {} point at an SMTP server",
                self.address(),
                TRY_TIMEOUT.as_secs(),
                self.file
            ))),
        }
    }

    fn tls_parameters(&self) -> Result<TlsParameters, SendError> {
        let mut builder = TlsParameters::builder(self.host.clone());
        if let Some((path, pem)) = &self.ca {
            let cert = Certificate::from_pem(pem).map_err(|e| {
                SendError::fatal(format!("smtp.ca_file {path} is not a PEM certificate ({e}); check it in {}", self.file))
            })?;
            builder = builder.add_root_certificate(cert);
        }
        builder.build_rustls().map_err(|e| SendError::fatal(format!("cannot set up TLS: {}", cause(&e))))
    }

    async fn deliver(&self, message: &Message) -> Result<(), SendError> {
        let hello = ClientId::default();
        let implicit = match self.tls {
            TlsMode::Tls => Some(self.tls_parameters()?),
            _ => None,
        };
        let mut conn =
            AsyncSmtpConnection::connect_tokio1((self.host.as_str(), self.port), Some(CONNECT_TIMEOUT), &hello, implicit, None)
                .await
                .map_err(|e| self.connect_error(&e))?;
        if self.tls == TlsMode::Starttls {
            if !conn.can_starttls() {
                conn.abort().await;
                return Err(SendError::fatal(format!(
                    "the SMTP server {} does not offer STARTTLS; if it speaks TLS from the first byte (port 465) set smtp.tls: tls, or for a local relay without TLS set smtp.tls: none, in {}",
                    self.address(),
                    self.file
                )));
            }
            let params = self.tls_parameters()?;
            if let Err(e) = conn.starttls(params, &hello).await {
                // Past the server's yes to STARTTLS, any failure is the handshake's.
                return Err(if e.is_permanent() || e.is_transient() { self.answer_error("STARTTLS", &e) } else { self.tls_error(&e) });
            }
        }
        if let Some(login) = &self.login {
            let credentials = Credentials::new(login.user.clone(), login.password.clone());
            if let Err(e) = conn.auth(&[Mechanism::Plain, Mechanism::Login], &credentials).await {
                conn.abort().await;
                return Err(self.auth_error(login, &e));
            }
        }
        let result = conn.send(message.envelope(), &message.formatted()).await;
        match result {
            Ok(_) => {
                let _ = conn.quit().await;
                Ok(())
            }
            Err(e) => {
                conn.abort().await;
                Err(self.answer_error("the message", &e))
            }
        }
    }

    fn connect_error(&self, e: &lettre::transport::smtp::Error) -> SendError {
        if e.is_tls() {
            return self.tls_error(e);
        }
        if e.is_permanent() || e.is_transient() {
            return self.answer_error("the connection", e);
        }
        let why = if e.is_timeout() { format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()) } else { cause(e) };
        SendError::retryable(format!(
            "cannot connect to the SMTP server {}: {why}; check smtp.host and smtp.port in {}, and that the server is running",
            self.address(),
            self.file
        ))
    }

    fn tls_error(&self, e: &lettre::transport::smtp::Error) -> SendError {
        let why = cause(e);
        let lower = why.to_ascii_lowercase();
        let hint = if lower.contains("certificate") || lower.contains("unknownissuer") {
            match &self.ca {
                Some((path, _)) => format!(
                    "smtp.ca_file {path} does not vouch for the server's certificate; give the server's own certificate or the CA that signed it, and check that it names \"{}\"",
                    self.host
                ),
                None => format!(
                    "if the server uses a self-signed certificate or a private CA, set smtp.ca_file in {} to that certificate (PEM)",
                    self.file
                ),
            }
        } else if lower.contains("corrupt message") || lower.contains("invalidcontenttype") || lower.contains("eof") {
            format!(
                "the server did not answer in TLS: smtp.tls: tls is for servers that speak TLS from the first byte (port 465); use smtp.tls: starttls for port 587, in {}",
                self.file
            )
        } else {
            format!("check smtp.tls and smtp.port in {}", self.file)
        };
        SendError::fatal(format!("TLS with the SMTP server {} failed: {why}; {hint}", self.address()))
    }

    fn auth_error(&self, login: &Login, e: &lettre::transport::smtp::Error) -> SendError {
        if e.is_permanent() {
            return SendError::fatal(format!(
                "authentication failed for user {} at the SMTP server {}: {}; check smtp.username in {} and the password in ${}",
                login.user,
                self.address(),
                answer(e),
                self.file,
                login.env
            ));
        }
        if e.is_transient() {
            return SendError::retryable(format!(
                "the SMTP server {} could not check the login of user {} for now: {}",
                self.address(),
                login.user,
                answer(e)
            ));
        }
        let why = cause(e);
        if why.contains("No compatible authentication mechanism") {
            let after_tls = if self.tls == TlsMode::None { "; many servers offer logins only over TLS (smtp.tls: starttls)" } else { "" };
            return SendError::fatal(format!(
                "the SMTP server {} offers no login method flowctl supports (PLAIN, LOGIN) on this connection{after_tls}",
                self.address()
            ));
        }
        SendError::retryable(format!("logging in to the SMTP server {} as {} failed: {why}", self.address(), login.user))
    }

    /// An error while the server was sending or answering `what`.
    fn answer_error(&self, what: &str, e: &lettre::transport::smtp::Error) -> SendError {
        let needs_login = e.status().is_some_and(|c| c.to_string() == "530") && self.login.is_none();
        let hint = if needs_login {
            format!("; the server wants a login: set smtp.username and smtp.password_env in {}", self.file)
        } else {
            String::new()
        };
        let text = format!("the SMTP server {} refused {what}: {}{hint}", self.address(), answer(e));
        if e.is_permanent() {
            SendError::fatal(text)
        } else if e.is_transient() {
            SendError::retryable(text)
        } else {
            SendError::retryable(format!("talking to the SMTP server {} failed: {}", self.address(), cause(e)))
        }
    }
}

/// The server's answer: `535 5.7.8 authentication credentials invalid`.
fn answer(e: &lettre::transport::smtp::Error) -> String {
    let text = std::error::Error::source(e).map(|s| s.to_string()).unwrap_or_default();
    match e.status() {
        Some(code) => format!("{code} {text}").trim().to_string(),
        None => cause(e),
    }
}

/// The innermost cause of an error, which is what a person can act on ("connection refused").
pub(crate) fn cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut current = e;
    while let Some(next) = current.source() {
        current = next;
    }
    let text = current.to_string();
    // io errors read "Connection refused (os error 111)": keep the words, drop the number.
    let text = match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_string(),
        _ => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) if chars.clone().next().is_some_and(|c| c.is_lowercase()) => first.to_lowercase().chain(chars).collect(),
        _ => text,
    }
}

/// Parses recipients given as text (DAG files check only for an `@`).
pub fn mailboxes(addresses: &[String]) -> Result<Vec<Mailbox>, SendError> {
    addresses
        .iter()
        .map(|a| {
            a.trim().parse::<Mailbox>().map_err(|e| {
                SendError::fatal(format!("\"{a}\" is not an email address flowctl can send to ({e}); fix the recipient"))
            })
        })
        .collect()
}
