//! Secret masking: values that must never be written anywhere are replaced by `***` in attempt
//! logs, rendered settings, errors, outputs and every view of a run.
//!
//! A secret is any value of an environment variable whose name marks it as sensitive (Airflow's
//! rule: the name contains PASSWORD, SECRET, TOKEN or KEY, and a few spellings of the same idea).
//! Connections, the SMTP password and the server's API token add theirs with [`Masker::add`].
//!
//! A secret rarely travels only as it was given: a password sits percent-encoded in a connection
//! URI, escaped in JSON, base64-encoded with its user in an `Authorization: Basic` header. So a
//! secret added once brings every form it takes with it, and every place that masks masks them
//! all:
//!
//! - as it is, and with surrounding white space trimmed; each line of a secret that spans lines;
//! - percent-encoded by any encoder: each character other than an ASCII letter or digit may
//!   appear as itself or as `%XX` of its UTF-8 bytes in upper- or lower-case hex, a space also as
//!   `+` (form encoding), so the strict form, the `url` crate's, `encodeURIComponent`'s and
//!   Python's `quote_plus` all match, and so do mixtures;
//! - escaped: preceded by any number of backslashes (JSON's `\"` and `\\`, `\/`, shell escapes,
//!   JSON inside JSON), as `\uXXXX` (JSON with only ASCII), `\n`, `\t`, `\r`, and as an HTML
//!   entity for `"`, `&`, `'`, `<` and `>`;
//! - base64-encoded, standard or URL-safe, wherever the secret falls in the encoded text: the
//!   characters that encode only the secret's bytes, at each of the three offsets a byte can have
//!   in base64's groups of three, widened to the whole run of base64 characters around them, so
//!   `Basic base64(user:password)` becomes `Basic ***`.
//!
//! What no masker can find: a secret the task itself transforms (hashed, reversed, encrypted,
//! split across lines or chunks), encodings of encodings beyond those above (`%252F`, base64 of
//! percent-encoding), and secrets shorter than [`MIN_SECRET_LEN`].
//!
//! Every form of every secret is one pattern of a [`regex::RegexSet`], compiled once after the
//! secrets change: text with no secret in it, nearly all of it, costs one pass of the set.

use std::borrow::Cow;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use regex::{Regex, RegexSet};

/// Name fragments that make an environment variable sensitive.
pub const SENSITIVE_NAME_PARTS: &[&str] = &["PASSWORD", "PASSWD", "PASSPHRASE", "SECRET", "TOKEN", "KEY", "CREDENTIAL"];

/// Values shorter than this are not masked: masking `1` or `yes` everywhere would make logs
/// unreadable and protect nothing (Airflow's default minimum is the same).
pub const MIN_SECRET_LEN: usize = 5;

/// The fewest base64 characters that stand for a secret: a run this long of the characters that
/// encode only the secret's bytes is as unlikely in other text as the secret itself (64^6).
const MIN_BASE64_RUN: usize = 6;

/// The largest compiled form of the secrets: far beyond what even hundreds of secrets need.
const REGEX_SIZE_LIMIT: usize = 256 << 20;

/// Whether an environment variable's name marks its value as secret.
pub fn is_sensitive_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SENSITIVE_NAME_PARTS.iter().any(|part| upper.contains(part))
}

/// The set of secrets to mask, shared by everything that writes.
#[derive(Clone, Default)]
pub struct Masker {
    inner: Arc<RwLock<Inner>>,
}

#[derive(Default)]
struct Inner {
    /// The values, as added.
    secrets: Vec<String>,
    /// Their forms, compiled at the first masking after a change.
    compiled: Option<Arc<Compiled>>,
}

/// Every form of every secret: pattern `i` of `any` is `forms[i]`.
struct Compiled {
    any: RegexSet,
    forms: Vec<Form>,
}

struct Form {
    regex: Regex,
    /// A base64 form: a match is widened to the base64 run around it.
    base64: bool,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the values: a masker in a debug print must not be the leak.
        f.debug_struct("Masker").field("secrets", &self.read().secrets.len()).finish()
    }
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

    // A panic elsewhere while the lock was held must not turn masking off: the data is a list of
    // strings, valid whatever happened.
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a secret value, with every form it takes (see the module's documentation). Values
    /// shorter than [`MIN_SECRET_LEN`] are ignored.
    pub fn add(&self, secret: &str) {
        let mut values = vec![secret];
        // A value read from a file keeps its newline, and logs are split into lines: mask the
        // value without it, and each line of a value that spans lines (a PEM key, JSON).
        values.push(secret.trim());
        if secret.contains('\n') {
            values.extend(secret.lines().map(str::trim));
        }
        let mut inner = self.write();
        for value in values {
            if value.len() >= MIN_SECRET_LEN && !inner.secrets.iter().any(|s| s == value) {
                inner.secrets.push(value.to_string());
                inner.compiled = None;
            }
        }
    }

    fn compiled(&self) -> Option<Arc<Compiled>> {
        {
            let inner = self.read();
            if inner.secrets.is_empty() {
                return None;
            }
            if let Some(compiled) = &inner.compiled {
                return Some(compiled.clone());
            }
        }
        let mut inner = self.write();
        if inner.compiled.is_none() {
            inner.compiled = Some(Arc::new(Compiled::new(&inner.secrets)));
        }
        inner.compiled.clone()
    }

    /// `text` with every form of every secret replaced by `***`.
    pub fn mask<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if text.len() < MIN_SECRET_LEN {
            return Cow::Borrowed(text);
        }
        let Some(compiled) = self.compiled() else { return Cow::Borrowed(text) };
        if !compiled.any.is_match(text) {
            return Cow::Borrowed(text);
        }
        // Every match of every form, overlapping ones merged: two secrets that share characters
        // are both masked whole, whichever comes first.
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for index in compiled.any.matches(text).iter() {
            let form = &compiled.forms[index];
            for found in form.regex.find_iter(text) {
                let span = (found.start(), found.end());
                spans.push(if form.base64 { widen_base64(text, span) } else { span });
            }
        }
        spans.sort_unstable();
        let mut out = String::with_capacity(text.len());
        let mut written = 0;
        let mut current: Option<(usize, usize)> = None;
        for (start, end) in spans {
            match &mut current {
                Some((_, last_end)) if start <= *last_end => *last_end = (*last_end).max(end),
                _ => {
                    if let Some((s, e)) = current.replace((start, end)) {
                        out.push_str(&text[written..s]);
                        out.push_str("***");
                        written = e;
                    }
                }
            }
        }
        if let Some((s, e)) = current {
            out.push_str(&text[written..s]);
            out.push_str("***");
            written = e;
        }
        out.push_str(&text[written..]);
        Cow::Owned(out)
    }

    /// A JSON value with every string masked, object keys included; a number that is a secret
    /// becomes the string `***`.
    pub fn mask_json(&self, value: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match value {
            Value::String(s) => Value::String(self.mask(s).into_owned()),
            Value::Number(n) => match self.mask(&n.to_string()) {
                Cow::Owned(masked) => Value::String(masked),
                Cow::Borrowed(_) => value.clone(),
            },
            Value::Array(items) => Value::Array(items.iter().map(|v| self.mask_json(v)).collect()),
            Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (self.mask(k).into_owned(), self.mask_json(v))).collect()),
            other => other.clone(),
        }
    }

    /// The secret values as added (not their other forms), for operators that hand them on.
    pub fn values(&self) -> Vec<String> {
        self.read().secrets.clone()
    }
}

impl Compiled {
    fn new(secrets: &[String]) -> Compiled {
        let mut patterns = Vec::new();
        let mut base64 = Vec::new();
        for secret in secrets {
            patterns.push(text_pattern(secret));
            base64.push(false);
            let runs = base64_runs(secret.as_bytes());
            if !runs.is_empty() {
                patterns.push(runs.iter().map(|r| text_pattern(r)).collect::<Vec<_>>().join("|"));
                base64.push(true);
            }
        }
        Compiled::build(&patterns, &base64).unwrap_or_else(|| {
            // Beyond the size limit: the values as they are still must be masked.
            let plain: Vec<String> = secrets.iter().map(|s| regex::escape(s)).collect();
            Compiled::build(&plain, &vec![false; plain.len()]).unwrap_or_else(|| Compiled { any: RegexSet::empty(), forms: Vec::new() })
        })
    }

    fn build(patterns: &[String], base64: &[bool]) -> Option<Compiled> {
        let any = regex::RegexSetBuilder::new(patterns).size_limit(REGEX_SIZE_LIMIT).build().ok()?;
        let forms = patterns
            .iter()
            .zip(base64)
            .map(|(p, &base64)| regex::RegexBuilder::new(p).size_limit(REGEX_SIZE_LIMIT).build().ok().map(|regex| Form { regex, base64 }))
            .collect::<Option<Vec<Form>>>()?;
        Some(Compiled { any, forms })
    }
}

/// A pattern matching `text` as it is, percent-encoded or escaped, in any mixture (see the
/// module's documentation). ASCII letters and digits stand for themselves: no encoder touches
/// them, and they keep the pattern's literal parts long for the search.
fn text_pattern(text: &str) -> String {
    let mut pattern = String::new();
    for ch in text.chars() {
        if ch.is_ascii_alphanumeric() {
            pattern.push(ch);
            continue;
        }
        let mut utf8 = [0u8; 4];
        let mut forms = vec![regex::escape(ch.encode_utf8(&mut utf8))];
        forms.push(ch.encode_utf8(&mut utf8).bytes().map(|b| format!("%{}", hex_pattern(u32::from(b), 2))).collect());
        let mut utf16 = [0u16; 2];
        forms.push(ch.encode_utf16(&mut utf16).iter().map(|u| format!(r"\\u{}", hex_pattern(u32::from(*u), 4))).collect());
        match ch {
            ' ' => forms.push(r"\+".into()),
            '\n' => forms.push(r"\\n".into()),
            '\t' => forms.push(r"\\t".into()),
            '\r' => forms.push(r"\\r".into()),
            '"' => forms.extend(["&quot;".into(), "&#34;".into(), "&#x22;".into()]),
            '&' => forms.extend(["&amp;".into(), "&#38;".into(), "&#x26;".into()]),
            '\'' => forms.extend(["&apos;".into(), "&#39;".into(), "&#x27;".into()]),
            '<' => forms.extend(["&lt;".into(), "&#60;".into(), "&#x3[Cc];".into()]),
            '>' => forms.extend(["&gt;".into(), "&#62;".into(), "&#x3[Ee];".into()]),
            _ => {}
        }
        pattern.push_str(&format!(r"(?:\\*(?:{}))", forms.join("|")));
    }
    pattern
}

/// `value` as `digits` hex digits, each letter in either case.
fn hex_pattern(value: u32, digits: u32) -> String {
    (0..digits)
        .rev()
        .map(|i| match (value >> (4 * i)) & 15 {
            d @ 0..=9 => char::from(b'0' + d as u8).to_string(),
            d => format!("[{}{}]", char::from(b'A' + d as u8 - 10), char::from(b'a' + d as u8 - 10)),
        })
        .collect()
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64, padded.
fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() { char::from(BASE64[(n >> (18 - 6 * i) & 63) as usize]) } else { '=' });
        }
    }
    out
}

/// The base64 characters that encode only `secret`'s bytes, wherever it falls in the encoded
/// text: after 0, 1 or 2 bytes of a group of three, in the standard and the URL-safe alphabet.
/// Character `i` of an encoding stands for bits `6i..6i+6`; the secret's bits start at `8k`.
fn base64_runs(secret: &[u8]) -> Vec<String> {
    let mut runs: Vec<String> = Vec::new();
    for offset in 0..3 {
        let mut bytes = vec![0u8; offset];
        bytes.extend_from_slice(secret);
        let encoded = base64(&bytes);
        let first = (8 * offset).div_ceil(6);
        let end = 8 * (offset + secret.len()) / 6;
        if end < first + MIN_BASE64_RUN {
            continue;
        }
        let run = encoded[first..end].to_string();
        let url_safe = run.replace('+', "-").replace('/', "_");
        for run in [run, url_safe] {
            if !runs.contains(&run) {
                runs.push(run);
            }
        }
    }
    runs
}

/// `span` widened over the base64 characters around it (either alphabet, with padding at the
/// end): the characters at a run's ends also encode the secret's first and last bits.
fn widen_base64(text: &str, (mut start, mut end): (usize, usize)) -> (usize, usize) {
    let bytes = text.as_bytes();
    let is_base64 = |b: u8| b.is_ascii_alphanumeric() || b"+/-_".contains(&b);
    while start > 0 && is_base64(bytes[start - 1]) {
        start -= 1;
    }
    while end < bytes.len() && is_base64(bytes[end]) {
        end += 1;
    }
    while end < bytes.len() && bytes[end] == b'=' {
        end += 1;
    }
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANARY: &str = r#"Zq7/pl+us sp%ce"quo\te-canary"#;

    fn masker(secrets: &[&str]) -> Masker {
        let m = Masker::default();
        for s in secrets {
            m.add(s);
        }
        m
    }

    /// `text` masked by a masker of `secrets`.
    fn masked(secrets: &[&str], text: &str) -> String {
        masker(secrets).mask(text).into_owned()
    }

    /// Percent-encodes every byte that is not unreserved (RFC 3986): the strictest form.
    fn strict(text: &str) -> String {
        text.bytes()
            .map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { char::from(b).to_string() } else { format!("%{b:02X}") })
            .collect()
    }

    #[test]
    fn masks_secrets_longest_first() {
        let m = masker(&["hunter2-canary", "hunter2", "abc"]);
        assert_eq!(m.mask("pw=hunter2-canary, short=hunter2, abc"), "pw=***, short=***, abc");
        let json = serde_json::json!({"a": ["x hunter2 y"], "n": 1});
        assert_eq!(m.mask_json(&json), serde_json::json!({"a": ["x *** y"], "n": 1}));
    }

    #[test]
    fn text_without_a_secret_is_not_copied() {
        let m = masker(&[CANARY]);
        assert!(matches!(m.mask("nothing to see here, Zq7 pl us sp ce quo te canary"), Cow::Borrowed(_)));
        assert!(matches!(Masker::default().mask("anything"), Cow::Borrowed(_)));
    }

    #[test]
    fn percent_encoded_in_either_case_and_any_mixture() {
        let encoded = strict(CANARY);
        assert_eq!(encoded, "Zq7%2Fpl%2Bus%20sp%25ce%22quo%5Cte-canary");
        assert_eq!(masked(&[CANARY], &format!("uri: mysql://u:{encoded}@db/x")), "uri: mysql://u:***@db/x");
        assert_eq!(masked(&[CANARY], &format!("[{}]", encoded.to_ascii_lowercase().replace("zq7", "Zq7"))), "[***]");
        assert_eq!(masked(&[CANARY], "[Zq7%2fpl+us%20sp%ce%22quo%5Cte-canary]"), "[***]");
    }

    #[test]
    fn the_forms_url_builders_produce() {
        // The `url` crate, as a driver builds its URL: `/`, space, `"` and `\` encoded, `+` and
        // `%` not.
        let mut url = url::Url::parse("mysql://db:3306/loans").unwrap();
        url.set_username("loader").unwrap();
        url.set_password(Some(CANARY)).unwrap();
        assert_eq!(url.as_str(), "mysql://loader:Zq7%2Fpl+us%20sp%ce%22quo%5Cte-canary@db:3306/loans");
        assert_eq!(masked(&[CANARY], url.as_str()), "mysql://loader:***@db:3306/loans");
        // Form encoding (HTML forms, query strings): a space is `+`.
        let form: String = url::form_urlencoded::Serializer::new(String::new()).append_pair("password", CANARY).finish();
        assert_eq!(form, "password=Zq7%2Fpl%2Bus+sp%25ce%22quo%5Cte-canary");
        assert_eq!(masked(&[CANARY], &form), "password=***");
    }

    #[test]
    fn json_escaped_at_any_depth() {
        let once = serde_json::to_string(CANARY).unwrap();
        assert_eq!(once, r#""Zq7/pl+us sp%ce\"quo\\te-canary""#);
        assert_eq!(masked(&[CANARY], &format!("{{\"password\":{once}}}")), r#"{"password":"***"}"#);
        let twice = serde_json::to_string(&format!("{{\"password\":{once}}}")).unwrap();
        assert_eq!(masked(&[CANARY], &twice), r#""{\"password\":\"***\"}""#);
        // JSON that escapes `/` and everything beyond ASCII (Python's json.dumps).
        assert_eq!(masked(&["caf\u{e9}/cr\u{e8}me-1"], r#"{"pw": "caf\u00e9\/cr\u00E8me-1"}"#), r#"{"pw": "***"}"#);
        // A newline in a secret, escaped in JSON.
        assert_eq!(masked(&["line-one\tline-two"], r#""line-one\tline-two""#), r#""***""#);
    }

    #[test]
    fn html_entities() {
        assert_eq!(masked(&[CANARY], "<b>Zq7/pl+us sp%ce&quot;quo\\te-canary</b>"), "<b>***</b>");
        assert_eq!(masked(&["a<b>&'c-secret"], "value=a&lt;b&gt;&amp;&#39;c-secret"), "value=***");
    }

    #[test]
    fn base64_at_every_offset_and_in_both_alphabets() {
        let m = masker(&[CANARY]);
        for prefix in ["", "a", "ab", "loader:", "user:"] {
            let encoded = base64(format!("{prefix}{CANARY}").as_bytes());
            assert_eq!(m.mask(&format!("Authorization: Basic {encoded}")), "Authorization: Basic ***", "prefix {prefix:?}: {encoded}");
            let url_safe = encoded.replace('+', "-").replace('/', "_").trim_end_matches('=').to_string();
            assert_eq!(m.mask(&format!("token={url_safe}&x=1")), "token=***&x=1", "prefix {prefix:?}: {url_safe}");
        }
        // Base64 of a longer text that holds the secret: the whole run goes.
        let blob = base64(format!("{{\"user\": \"loader\", \"password\": \"{CANARY}\"}}").as_bytes());
        assert_eq!(m.mask(&format!("config {blob} end")), "config *** end");
        // The characters of a base64 run are no secret on their own.
        assert!(matches!(m.mask("Basic bG9hZGVyOnNvbWV0aGluZy1lbHNl"), Cow::Borrowed(_)));
    }

    #[test]
    fn base64_runs_stand_for_the_secret_alone() {
        let secret = b"hunter2-canary";
        let runs = base64_runs(secret);
        for prefix in [&b""[..], b"x", b"xy", b"user:", b"other user:"] {
            for suffix in [&b""[..], b"z", b"!!"] {
                let encoded = base64(&[prefix, &secret[..], suffix].concat());
                assert!(runs.iter().any(|r| encoded.contains(r.as_str())), "{encoded} holds none of {runs:?}");
            }
        }
    }

    #[test]
    fn overlapping_secrets_are_both_masked_whole() {
        assert_eq!(masked(&["password123", "123secret"], "x password123secret y"), "x *** y");
        assert_eq!(masked(&["abcde-1", "e-1fgh"], "[abcde-1fgh] [e-1fgh]"), "[***] [***]");
    }

    #[test]
    fn a_secret_with_a_newline_is_masked_line_by_line() {
        let key = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0B\nAQEFAASCBKcwggSjAgEAAoIB\n-----END KEY-----\n";
        let m = masker(&[key]);
        assert_eq!(m.mask("line MIIEvQIBADANBgkqhkiG9w0B"), "line ***");
        assert_eq!(m.mask("AQEFAASCBKcwggSjAgEAAoIB"), "***");
        assert_eq!(masked(&["hunter2-canary\n"], "pw=hunter2-canary"), "pw=***");
    }

    #[test]
    fn what_is_not_a_secret_stays() {
        let m = masker(&[CANARY, "abc"]);
        // Letters and digits are never encoded, so a near miss is not masked.
        for text in ["Zq7_pl+us sp%ce\"quo\\te-canary", "Zq7/pl+us sp%ce\"quo\\te-canarY", "zq7%2Fpl%2Bus%20sp%25ce%22quo%5Cte-canary", "abc"] {
            assert_eq!(m.mask(text), text);
        }
        assert_eq!(masked(&["1234"], "pin 1234"), "pin 1234");
    }

    #[test]
    fn json_numbers_and_keys_are_masked() {
        let m = masker(&["4711081500", "key-canary"]);
        let value = serde_json::json!({"pin": 4711081500u64, "key-canary": "x", "n": 3});
        assert_eq!(m.mask_json(&value), serde_json::json!({"pin": "***", "***": "x", "n": 3}));
    }

    #[test]
    fn adding_a_secret_after_masking_takes_effect() {
        let m = masker(&["first-secret"]);
        assert_eq!(m.mask("first-secret second-secret"), "*** second-secret");
        m.add("second-secret");
        assert_eq!(m.mask("first-secret second-secret"), "*** ***");
        assert_eq!(m.values(), ["first-secret", "second-secret"]);
    }

    #[test]
    fn the_forms_docs_runtime_md_lists() {
        let m = masker(&[r#"pa/ss+w rd"x"#]);
        for (text, expected) in [
            (r#"pa/ss+w rd"x"#, "***"),
            ("pa%2Fss%2Bw%20rd%22x", "***"),
            ("pa%2fss+w%20rd%22x", "***"),
            ("pa%2Fss%2Bw+rd%22x", "***"),
            (r#"pa/ss+w rd\"x"#, "***"),
            (r#"pa\/ss+w rd\\\"x"#, "***"),
            (r"pa\u002fss+w rd\u0022x", "***"),
            ("pa/ss+w rd&quot;x", "***"),
            ("Authorization: Basic bG9hZGVyOnBhL3NzK3cgcmQieA==", "Authorization: Basic ***"),
        ] {
            assert_eq!(m.mask(text), expected, "{text}");
        }
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let m = masker(&[CANARY]);
        assert_eq!(format!("{m:?}"), "Masker { secrets: 1 }");
    }

    #[test]
    fn sensitive_names() {
        for name in ["DB_PASSWORD", "aws_secret_access_key", "GITHUB_TOKEN", "API_KEY"] {
            assert!(is_sensitive_name(name), "{name}");
        }
        assert!(!is_sensitive_name("HOME"));
    }
}
