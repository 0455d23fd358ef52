//! `flowctl alert test [--to ADDR]`: sends a test message through the configured SMTP server, so
//! a broken mail setup is found when it is set up, not when the first quarterly job fails.
//!
//! It sends through the same code as alerts do, once, without retries, and says which step
//! failed and what to change. It reads the config file only: it needs no home lock and works
//! beside a running `flowctl run`.

use std::path::Path;

use super::{exit, CommandError};
use crate::alerts::email::{mailboxes, Smtp};
use crate::config::Config;
use crate::secrets::Masker;
use crate::state::Home;

/// Runs `flowctl alert test`: exit 0 when the server accepted the message, 2 otherwise.
pub fn alert_test(home: Option<&Path>, config: Option<&Path>, to: Option<&str>, registry: &crate::operator::Registry) -> Result<u8, CommandError> {
    let config = Config::load(&Home::resolve(home), config, &registry.aws_services())?;
    let masker = Masker::from_env();
    let fail = |message: &str| {
        eprintln!("error: {}", masker.mask(message));
        Ok(exit::INVALID)
    };
    let smtp = match Smtp::from_config(&config) {
        Ok(smtp) => smtp,
        Err(e) => return fail(&e.message),
    };
    if let Some(password) = smtp.password() {
        masker.add(password);
    }
    let recipients: Vec<String> = match to {
        Some(address) => vec![address.to_string()],
        None => config.alerts.to.iter().map(|a| a.to_text()).collect(),
    };
    if recipients.is_empty() {
        return fail(&format!(
            "no recipient: give one with --to ADDR, or set alerts.to in {}",
            config.describe_source()
        ));
    }
    let mailboxes = match mailboxes(&recipients) {
        Ok(m) => m,
        Err(e) => return fail(&e.message),
    };
    let host = lettre::transport::smtp::extension::ClientId::default().to_string();
    let subject = "[flowctl] test message".to_string();
    let body = format!(
        "This is a test message from flowctl on {host}, sent with the SMTP settings of\n{}.\n\nIf you can read it, flowctl's alert emails will reach you.\n",
        config.describe_source()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CommandError::usage(format!("cannot start the async runtime: {e}")))?;
    match runtime.block_on(smtp.send(&mailboxes, &subject, body)) {
        Ok(()) => {
            outln!("sent a test message to {} through {}", recipients.join(", "), smtp.describe());
            Ok(exit::OK)
        }
        Err(e) => fail(&format!("cannot send the test message: {}", e.message)),
    }
}
