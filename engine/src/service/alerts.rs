//! `alert test`: one test message through the configured SMTP server, so a broken mail setup is
//! found when it is set up, not when the first quarterly job fails.
//!
//! It sends through the same code as alerts do, once, without retries, and says which step failed
//! and what to change. It reads the config file only: it needs no home lock.

use crate::alerts::email::{mailboxes, Smtp};
use crate::config::Config;
use crate::protocol::ServiceError;

/// A test message that the SMTP server accepted.
#[derive(Debug, Clone)]
pub struct TestAlert {
    /// Its recipients.
    pub recipients: Vec<String>,
    /// The server, in words (host, port, TLS mode).
    pub server: String,
}

/// Sends a test message to `to`, or to the config's `alerts.to`. Every message is masked.
pub fn send_test_alert(config: &Config, to: Option<&str>) -> Result<TestAlert, ServiceError> {
    let masker = super::masker_for(config);
    let fail = |message: &str| ServiceError::bad_request(masker.mask(message).into_owned());
    let smtp = Smtp::from_config(config).map_err(|e| fail(&e.message))?;
    let recipients: Vec<String> = match to {
        Some(address) => vec![address.to_string()],
        None => config.alerts.to.iter().map(|a| a.to_text()).collect(),
    };
    if recipients.is_empty() {
        return Err(fail(&format!("no recipient: give one with --to ADDR, or set alerts.to in {}", config.describe_source())));
    }
    let mailboxes = mailboxes(&recipients).map_err(|e| fail(&e.message))?;
    let host = lettre::transport::smtp::extension::ClientId::default().to_string();
    let subject = "[flowctl] test message".to_string();
    let body = format!(
        "This is a test message from flowctl on {host}, sent with the SMTP settings of\n{}.\n\nIf you can read it, flowctl's alert emails will reach you.\n",
        config.describe_source()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ServiceError::unavailable(format!("cannot start the async runtime: {e}")))?;
    runtime
        .block_on(smtp.send(&mailboxes, &subject, body))
        .map_err(|e| fail(&format!("cannot send the test message: {}", e.message)))?;
    Ok(TestAlert { recipients, server: smtp.describe() })
}
