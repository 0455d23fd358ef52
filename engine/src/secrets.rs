//! Secret masking: values that must never be written anywhere are replaced by `***` in attempt
//! logs, rendered settings, errors and status.
//!
//! A secret is any value of an environment variable whose name marks it as sensitive (Airflow's
//! rule: the name contains PASSWORD, SECRET, TOKEN or KEY, and a few spellings of the same idea).
//! Connections add their own secrets with [`Masker::add`].

use std::borrow::Cow;
use std::sync::{Arc, RwLock};

/// Name fragments that make an environment variable sensitive.
pub const SENSITIVE_NAME_PARTS: &[&str] = &["PASSWORD", "PASSWD", "PASSPHRASE", "SECRET", "TOKEN", "KEY", "CREDENTIAL"];

/// Values shorter than this are not masked: masking `1` or `yes` everywhere would make logs
/// unreadable and protect nothing (Airflow's default minimum is the same).
pub const MIN_SECRET_LEN: usize = 5;

/// Whether an environment variable's name marks its value as secret.
pub fn is_sensitive_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SENSITIVE_NAME_PARTS.iter().any(|part| upper.contains(part))
}

/// The set of secrets to mask, shared by everything that writes.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    secrets: Arc<RwLock<Vec<String>>>,
}

impl Masker {
    /// A masker holding the secret values of this process's environment.
    pub fn from_env() -> Self {
        let masker = Masker::default();
        for (name, value) in std::env::vars() {
            if is_sensitive_name(&name) {
                masker.add(&value);
            }
        }
        masker
    }

    /// Adds a secret value.
    pub fn add(&self, secret: &str) {
        if secret.len() < MIN_SECRET_LEN {
            return;
        }
        if let Ok(mut secrets) = self.secrets.write() {
            if !secrets.iter().any(|s| s == secret) {
                secrets.push(secret.to_string());
                // Longest first, so a secret that contains another is masked whole.
                secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
            }
        }
    }

    /// `text` with every secret replaced by `***`.
    pub fn mask<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let Ok(secrets) = self.secrets.read() else { return Cow::Borrowed(text) };
        let mut out = Cow::Borrowed(text);
        for secret in secrets.iter() {
            if out.contains(secret.as_str()) {
                out = Cow::Owned(out.replace(secret.as_str(), "***"));
            }
        }
        out
    }

    /// A JSON value with every string masked.
    pub fn mask_json(&self, value: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match value {
            Value::String(s) => Value::String(self.mask(s).into_owned()),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.mask_json(v)).collect()),
            Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), self.mask_json(v))).collect()),
            other => other.clone(),
        }
    }

    /// The secret values, for operators that must hide them from child processes' output.
    pub fn values(&self) -> Vec<String> {
        self.secrets.read().map(|s| s.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_secrets_longest_first() {
        let m = Masker::default();
        m.add("hunter2-canary");
        m.add("hunter2");
        m.add("abc");
        assert_eq!(m.mask("pw=hunter2-canary, short=hunter2, abc"), "pw=***, short=***, abc");
        let json = serde_json::json!({"a": ["x hunter2 y"], "n": 1});
        assert_eq!(m.mask_json(&json), serde_json::json!({"a": ["x *** y"], "n": 1}));
    }

    #[test]
    fn sensitive_names() {
        for name in ["DB_PASSWORD", "aws_secret_access_key", "GITHUB_TOKEN", "API_KEY"] {
            assert!(is_sensitive_name(name), "{name}");
        }
        assert!(!is_sensitive_name("HOME"));
    }
}
