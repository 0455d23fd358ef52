//! From a resolved `aws` connection to an SDK configuration, the same way for every service, so
//! that credentials, endpoints and retries behave alike for S3, EMR, Redshift and SageMaker: the
//! region, the profile, the service's own endpoint (or the connection's global one), static keys or
//! the default chain, a role assumed through STS, and the SDK's standard retry mode (throttling and
//! 5xx replies are retried with backoff inside an attempt). The `aws` connection tester lives here
//! too: it is the cheapest call such a configuration can make (STS GetCallerIdentity).

use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use aws_smithy_types::retry::RetryConfig;
use aws_types::region::Region;
use aws_types::SdkConfig;
use flowctl_engine::connections::{AwsConnection, Connection, ConnectionKind};
use flowctl_engine::operator::{ConnectionTester, TaskError};

use super::errors::describe_service_error;

/// How many times the SDK sends a request before an error reaches the operator (the first try
/// included). Throttling, 5xx replies, timeouts and lost connections are retried.
pub const SDK_MAX_ATTEMPTS: u32 = 5;
/// The first backoff between SDK retries; it doubles (with jitter) up to [`SDK_MAX_BACKOFF`].
pub const SDK_INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// The longest backoff between SDK retries.
pub const SDK_MAX_BACKOFF: Duration = Duration::from_secs(20);
/// The assumed role's session name when the connection sets none.
pub const DEFAULT_SESSION_NAME: &str = "flowctl";

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

/// Tests `type: aws` connections: STS GetCallerIdentity with the connection's credentials.
pub struct AwsTester;

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

    #[test]
    fn endpoint_label_prefers_the_service_endpoint() {
        let mut c = AwsConnection { name: "lake".into(), region: Some("eu-west-1".into()), ..AwsConnection::default() };
        assert_eq!(endpoint_label(&c, Some("s3")), "AWS in eu-west-1");
        c.endpoint_url = Some("http://127.0.0.1:5000".into());
        c.endpoints.insert("sts".into(), "http://127.0.0.1:6000".into());
        assert_eq!(endpoint_label(&c, Some("s3")), "endpoint http://127.0.0.1:5000");
        assert_eq!(endpoint_label(&c, Some("sts")), "endpoint http://127.0.0.1:6000");
    }
}
