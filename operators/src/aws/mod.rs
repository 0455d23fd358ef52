//! AWS operators: the shared connection-to-SDK plumbing, and one folder per service behind its
//! cargo feature.
//!
//! Every AWS operator goes through the same three pieces, so that credentials, endpoints, retries
//! and error messages behave the same for S3, EMR, Redshift and SageMaker:
//!
//! - [`sdk_config`] turns a resolved [`AwsConnection`] into an `aws_types::SdkConfig` for one
//!   service: region, profile, endpoint (the service's own or the global one), static keys or the
//!   default chain, a role assumed through STS, and the SDK's standard retry mode so throttling
//!   and 5xx replies are retried with backoff inside an attempt;
//! - [`describe_sdk_error`] turns an SDK error into a [`TaskError`] that says what is wrong and
//!   what to do (which credentials were used, which endpoint answered), marked retryable or final;
//! - [`register`] adds the operators of this build and the `aws` connection tester (STS
//!   GetCallerIdentity) that `flowctl connections test` runs.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use aws_sdk_sts::config::http::HttpResponse;
use aws_sdk_sts::error::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_smithy_types::retry::RetryConfig;
use aws_types::region::Region;
use aws_types::SdkConfig;
use flowctl_engine::connections::{AwsConnection, Connection, ConnectionKind};
use flowctl_engine::operator::{ConnectionTester, TaskError};
use flowctl_engine::Registry;

#[cfg(feature = "aws-s3")]
pub mod s3;
// Further services join here, each behind its cargo feature:
#[cfg(feature = "aws-emr")]
pub mod emr;
#[cfg(feature = "aws-redshift")]
pub mod redshift;
#[cfg(feature = "aws-sagemaker")]
pub mod sagemaker;

/// How many times the SDK sends a request before an error reaches the operator (the first try
/// included). Throttling, 5xx replies, timeouts and lost connections are retried.
pub const SDK_MAX_ATTEMPTS: u32 = 5;
/// The first backoff between SDK retries; it doubles (with jitter) up to [`SDK_MAX_BACKOFF`].
pub const SDK_INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// The longest backoff between SDK retries.
pub const SDK_MAX_BACKOFF: Duration = Duration::from_secs(20);
/// The assumed role's session name when the connection sets none.
pub const DEFAULT_SESSION_NAME: &str = "flowctl";

/// Adds the AWS operators of this build, and the `aws` connection tester.
pub fn register(registry: &mut Registry) {
    registry.register_tester("aws", Arc::new(AwsTester)).register_aws_service("sts");
    #[cfg(feature = "aws-s3")]
    s3::register(registry);
    // Further services register here, each behind its cargo feature:
    #[cfg(feature = "aws-emr")]
    emr::register(registry);
    #[cfg(feature = "aws-redshift")]
    redshift::register(registry);
    #[cfg(feature = "aws-sagemaker")]
    sagemaker::register(registry);
}

/// The retry policy every AWS client gets: the SDK's standard mode with a few attempts and
/// exponential backoff, so a throttled or failing request is retried before the attempt fails.
pub fn retry_config() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(SDK_MAX_ATTEMPTS)
        .with_initial_backoff(SDK_INITIAL_BACKOFF)
        .with_max_backoff(SDK_MAX_BACKOFF)
}

/// The SDK configuration of `service` (a name the family declared with
/// `Registry::register_aws_service`, e.g. `s3`, `emr`, `redshift_data`) for a connection: its region, profile, endpoint, credentials and
/// role, with the standard retry policy. Build the service's client from it
/// (`aws_sdk_emr::Client::new(&config)`).
pub async fn sdk_config(conn: &AwsConnection, service: &str) -> Result<SdkConfig, TaskError> {
    let base = loader(conn, conn.endpoint_for(service)).load().await;
    let Some(region) = base.region().cloned() else {
        return Err(TaskError::fatal(format!(
            "connection \"{}\" has no region: set `region:` in its definition (config.yaml, or ?region=... in FLOWCTL_CONN_{}), {}or export AWS_REGION",
            conn.name,
            conn.name.to_ascii_uppercase(),
            if conn.profile.is_some() { "set `region` in the profile, " } else { "" }
        )));
    };
    let Some(role_arn) = &conn.role_arn else {
        return Ok(base);
    };
    // The role is assumed with the connection's own credentials, through the STS endpoint.
    let sts_config = loader(conn, conn.endpoint_for("sts")).region(region).load().await;
    let mut role = aws_config::sts::AssumeRoleProvider::builder(role_arn)
        .session_name(conn.role_session_name.as_deref().unwrap_or(DEFAULT_SESSION_NAME));
    if let Some(external_id) = &conn.external_id {
        role = role.external_id(external_id);
    }
    let provider = role.configure(&sts_config).build().await;
    Ok(base.into_builder().credentials_provider(SharedCredentialsProvider::new(provider)).build())
}

/// A config loader with the connection's settings and `endpoint`.
fn loader(conn: &AwsConnection, endpoint: Option<&str>) -> aws_config::ConfigLoader {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).retry_config(retry_config());
    if let Some(region) = &conn.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(profile) = &conn.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    if let Some(keys) = &conn.keys {
        let credentials = Credentials::new(
            keys.access_key_id.expose(),
            keys.secret_access_key.expose(),
            keys.session_token.as_ref().map(|t| t.expose().to_string()),
            None,
            "flowctl-connection",
        );
        loader = loader.credentials_provider(credentials);
    }
    loader
}

/// Where requests of `service` go, in words: the connection's endpoint, or AWS's own in the
/// connection's region.
pub fn endpoint_label(conn: &AwsConnection, service: Option<&str>) -> String {
    let endpoint = match service {
        Some(service) => conn.endpoint_for(service),
        None => conn.endpoint_url.as_deref(),
    };
    match (endpoint, &conn.region) {
        (Some(url), _) => format!("endpoint {url}"),
        (None, Some(region)) => format!("AWS in {region}"),
        (None, None) => "AWS".to_string(),
    }
}

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

/// Tests `type: aws` connections: STS GetCallerIdentity with the connection's credentials.
struct AwsTester;

#[async_trait]
impl ConnectionTester for AwsTester {
    async fn test(&self, connection: &Connection) -> Result<String, String> {
        let conn = match &connection.kind {
            ConnectionKind::Aws(aws) => aws,
            ConnectionKind::Broken(why) => return Err(why.clone()),
            other => return Err(format!("connection \"{}\" is a {} connection, not an aws one", connection.name, other.type_name())),
        };
        caller_identity(conn).await.map_err(|e| e.message)
    }
}

/// Who the connection's credentials are, in one line: account, ARN, region and endpoint.
pub async fn caller_identity(conn: &AwsConnection) -> Result<String, TaskError> {
    let config = sdk_config(conn, "sts").await?;
    let region = config.region().map(|r| r.to_string()).unwrap_or_default();
    let client = aws_sdk_sts::Client::new(&config);
    let identity = client
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| describe_service_error(&e, "sts GetCallerIdentity", conn, Some("sts")))?;
    Ok(format!(
        "account {}, identity {}, region {region}, {} (credentials: {})",
        identity.account().unwrap_or("?"),
        identity.arn().unwrap_or("?"),
        endpoint_label(conn, Some("sts")),
        conn.credential_source()
    ))
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

    #[test]
    fn endpoint_label_prefers_the_service_endpoint() {
        let mut c = conn();
        assert_eq!(endpoint_label(&c, Some("s3")), "AWS in eu-west-1");
        c.endpoint_url = Some("http://127.0.0.1:5000".into());
        c.endpoints.insert("sts".into(), "http://127.0.0.1:6000".into());
        assert_eq!(endpoint_label(&c, Some("s3")), "endpoint http://127.0.0.1:5000");
        assert_eq!(endpoint_label(&c, Some("sts")), "endpoint http://127.0.0.1:6000");
    }
}
