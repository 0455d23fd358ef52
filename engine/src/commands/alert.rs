//! `flowctl alert test [--to ADDR]`: sends a test message through the configured SMTP server
//! (see [`crate::service::send_test_alert`]). It reads the config file only: it needs no home
//! lock and works beside a running `flowctl run`.

use std::path::Path;

use super::{exit, CommandError};
use crate::config::Config;
use crate::operator::Registry;
use crate::state::Home;

/// Runs `flowctl alert test`: exit 0 when the server accepted the message, 2 otherwise.
pub fn alert_test(home: Option<&Path>, config: Option<&Path>, to: Option<&str>, registry: &Registry) -> Result<u8, CommandError> {
    let config = Config::load(&Home::resolve(home), config, &registry.aws_services())?;
    let sent = crate::service::send_test_alert(&config, to)?;
    outln!("sent a test message to {} through {}", sent.recipients.join(", "), sent.server);
    Ok(exit::OK)
}
