//! SDK errors in flowctl's terms: what is wrong and what to do (which credentials were used,
//! which endpoint answered), marked retryable (throttling, 5xx, a lost connection, a timeout) or
//! final (access denied, bad credentials, a missing bucket), so that only errors another try can
//! get past spend the task's retries.

use aws_sdk_sts::config::http::HttpResponse;
use aws_sdk_sts::error::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use flowctl_engine::connections::AwsConnection;
use flowctl_engine::operator::TaskError;

use super::sdk::{endpoint_label, SDK_MAX_ATTEMPTS};

/// Error codes that mean "slow down": retried by the SDK first, then by the task's policy.
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
];

/// Turns an SDK error about `what` (e.g. `s3://bucket/key`, `EMR cluster j-123`) into a
/// [`TaskError`] that says what is wrong and what to do, marked retryable (throttling, 5xx, a
/// lost connection, a timeout) or final (access denied, bad credentials, a missing bucket).
/// The endpoint it names is the connection's global one; use [`describe_service_error`] to name
/// a service's own endpoint.
pub fn describe_sdk_error<E>(err: &SdkError<E, HttpResponse>, what: &str, conn: &AwsConnection) -> TaskError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    describe_service_error(err, what, conn, None)
}

/// [`describe_sdk_error`] for requests to `service` (one of the connection's `endpoints:` keys),
/// so the message names the endpoint that answered.
pub fn describe_service_error<E>(err: &SdkError<E, HttpResponse>, what: &str, conn: &AwsConnection, service: Option<&str>) -> TaskError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let endpoint = endpoint_label(conn, service);
    let creds = conn.credential_source();
    let name = &conn.name;
    match err {
        SdkError::ServiceError(service_err) => {
            let status = service_err.raw().status().as_u16();
            // When the SDK could not read the reply's code (a stand-in such as moto answering
            // with another protocol's error layout), read it from the body.
            let body = service_err.raw().body().bytes().map(String::from_utf8_lossy).unwrap_or_default();
            let code = err.code().or_else(|| xml_field(&body, "Code")).unwrap_or("");
            let message = err.message().or_else(|| xml_field(&body, "Message")).unwrap_or("").trim().trim_end_matches('.');
            let detail = match (code, message) {
                ("", "") => format!("HTTP {status}"),
                ("", m) => format!("HTTP {status}: {m}"),
                (c, "") => format!("{c} (HTTP {status})"),
                (c, m) => format!("{c}: {m}"),
            };
            classify_service(Reply { status, code, detail: &detail }, what, name, &endpoint, &creds)
        }
        SdkError::DispatchFailure(failure) => {
            let cause = root_cause(err);
            if about_credentials(err) {
                no_credentials(what, name, &creds, &cause)
            } else if failure.is_timeout() {
                TaskError::retryable(format!("{what}: {endpoint} did not answer in time ({cause}), after {SDK_MAX_ATTEMPTS} tries"))
            } else if failure.is_io() || cause.contains("onnection refused") || cause.contains("dns error") {
                TaskError::retryable(format!(
                    "{what}: cannot reach {endpoint} ({cause}), after {SDK_MAX_ATTEMPTS} tries; check the endpoint and the network (connection \"{name}\")"
                ))
            } else {
                TaskError::retryable(format!("{what}: request to {endpoint} failed: {cause}"))
            }
        }
        SdkError::TimeoutError(_) => {
            TaskError::retryable(format!("{what}: {endpoint} did not answer in time, after {SDK_MAX_ATTEMPTS} tries"))
        }
        SdkError::ResponseError(response) => {
            let status = response.raw().status().as_u16();
            TaskError::retryable(format!("{what}: {endpoint} sent a reply that cannot be read (HTTP {status}): {}", root_cause(err)))
        }
        SdkError::ConstructionFailure(_) => {
            let cause = root_cause(err);
            if about_credentials(err) {
                no_credentials(what, name, &creds, &cause)
            } else {
                TaskError::fatal(format!("{what}: the request cannot be built: {cause}"))
            }
        }
        _ => TaskError::retryable(format!("{what}: {}", root_cause(err))),
    }
}

/// The text of the first `<name>...</name>` element of an XML error body.
fn xml_field<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    let start = body.find(&format!("<{name}>"))? + name.len() + 2;
    let end = body[start..].find(&format!("</{name}>"))? + start;
    Some(body[start..end].trim()).filter(|t| !t.is_empty())
}

/// The parts of a service's error reply the classifier looks at.
struct Reply<'a> {
    status: u16,
    code: &'a str,
    detail: &'a str,
}

fn classify_service(reply: Reply<'_>, what: &str, name: &str, endpoint: &str, creds: &str) -> TaskError {
    let Reply { status, code, detail } = reply;
    match code {
        "AccessDenied" | "AccessDeniedException" | "AllAccessDisabled" | "AuthorizationError" | "UnauthorizedOperation" => {
            TaskError::fatal(format!(
                "access denied to {what} ({detail}); the identity from {creds} (connection \"{name}\") lacks the permission: grant it in the IAM policy (and the bucket or resource policy), or use a connection whose identity has it"
            ))
        }
        "InvalidAccessKeyId" | "InvalidClientTokenId" | "UnrecognizedClientException" | "InvalidToken" | "AuthFailure" => {
            TaskError::fatal(format!(
                "{what}: {endpoint} does not know the access key ({detail}); the keys come from {creds} (connection \"{name}\"): check that they are current and belong to this account and endpoint"
            ))
        }
        "SignatureDoesNotMatch" | "IncompleteSignature" | "InvalidSignatureException" => TaskError::fatal(format!(
            "{what}: the secret access key does not match the access key id ({code} from {endpoint}); the keys come from {creds} (connection \"{name}\"): check the secret, and the clock of this machine"
        )),
        "ExpiredToken" | "ExpiredTokenException" | "TokenRefreshRequired" | "RequestExpired" => TaskError::fatal(format!(
            "{what}: the credentials have expired ({detail}); they come from {creds} (connection \"{name}\"): refresh the session (aws sso login, new temporary keys)"
        )),
        "NoSuchBucket" => TaskError::fatal(format!(
            "{what}: the bucket does not exist at {endpoint}; check the bucket's name and the connection's region and endpoint (connection \"{name}\")"
        )),
        "NoSuchKey" | "NotFound" => TaskError::fatal(format!("{what} does not exist ({detail})")),
        c if THROTTLING_CODES.contains(&c) || status == 429 => TaskError::retryable(format!(
            "{what}: {endpoint} is throttling requests ({detail}), still after {SDK_MAX_ATTEMPTS} tries with backoff"
        )),
        _ if status == 403 => TaskError::fatal(format!(
            "access denied to {what} ({detail}); the identity from {creds} (connection \"{name}\") lacks the permission"
        )),
        _ if status >= 500 => TaskError::retryable(format!("{what}: {endpoint} failed ({detail}), still after {SDK_MAX_ATTEMPTS} tries")),
        _ => TaskError::fatal(format!("{what}: {detail}")),
    }
}

fn no_credentials(what: &str, name: &str, creds: &str, cause: &str) -> TaskError {
    TaskError::fatal(format!(
        "{what}: no AWS credentials could be loaded from {creds} ({cause}); give connection \"{name}\" keys (access_key_id_env and secret_access_key_env) or a profile, or export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    ))
}

/// Whether any error of the chain is about loading credentials (the default chain found none,
/// a profile or SSO session failed, an assumed role was refused).
fn about_credentials(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        let text = e.to_string().to_ascii_lowercase();
        if text.contains("credential") || text.contains("identity") {
            return true;
        }
        current = e.source();
    }
    false
}

/// The innermost error's text, which is where the SDK puts the useful part (the OS error of a
/// refused connection, the credential provider's reason).
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current: &(dyn std::error::Error + 'static) = err;
    let mut messages = Vec::new();
    while let Some(next) = current.source() {
        let text = next.to_string();
        if !text.is_empty() && !messages.contains(&text) {
            messages.push(text);
        }
        current = next;
    }
    match messages.last() {
        Some(last) => last.clone(),
        None => DisplayErrorContext(err).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> AwsConnection {
        AwsConnection { name: "lake".into(), region: Some("eu-west-1".into()), ..AwsConnection::default() }
    }

    #[test]
    fn access_denied_is_final_and_names_the_credentials() {
        let err = classify_service(
            Reply { status: 403, code: "AccessDenied", detail: "AccessDenied: Access Denied" },
            "s3://b/k",
            "lake",
            "AWS in eu-west-1",
            &conn().credential_source(),
        );
        assert_eq!(err.kind, flowctl_engine::operator::ErrorKind::Final);
        assert_eq!(
            err.message,
            "access denied to s3://b/k (AccessDenied: Access Denied); the identity from the default credential chain (AWS_* variables, ~/.aws, SSO, instance role) (connection \"lake\") lacks the permission: grant it in the IAM policy (and the bucket or resource policy), or use a connection whose identity has it"
        );
    }

    #[test]
    fn throttling_and_5xx_are_retryable_and_4xx_final() {
        let c = |status, code: &str| classify_service(Reply { status, code, detail: "x" }, "w", "lake", "e", "c").kind;
        use flowctl_engine::operator::ErrorKind::*;
        assert_eq!(c(503, "SlowDown"), Retryable);
        assert_eq!(c(400, "ThrottlingException"), Retryable);
        assert_eq!(c(429, ""), Retryable);
        assert_eq!(c(500, "InternalError"), Retryable);
        assert_eq!(c(400, "InvalidArgument"), Final);
        assert_eq!(c(403, "InvalidAccessKeyId"), Final);
        assert_eq!(c(403, ""), Final);
    }

    #[test]
    fn error_fields_are_read_from_any_xml_layout() {
        let body = "<ErrorResponse><Errors><Error><Code>InvalidClientTokenId</Code><Message>The token is invalid.</Message></Error></Errors></ErrorResponse>";
        assert_eq!(xml_field(body, "Code"), Some("InvalidClientTokenId"));
        assert_eq!(xml_field(body, "Message"), Some("The token is invalid."));
        assert_eq!(xml_field(body, "RequestId"), None);
        assert_eq!(xml_field("<Code></Code>", "Code"), None);
    }
}
