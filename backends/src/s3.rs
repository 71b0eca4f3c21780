//! The S3 store: `s3://bucket/prefix` on AWS or an S3-compatible server, configured from the
//! usual `AWS_*` variables (endpoint, region, credentials, session token, path- or
//! virtual-hosted-style, plain HTTP for test servers, `AWS_CA_BUNDLE` for a private CA). It
//! only turns configuration into a backend; it must never put a credential into the store's
//! name, an error or a log line, and never let a server that ignores conditional writes take
//! a commit (see [`crate::create_check`]).

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, Certificate, ClientOptions, ObjectStore, RetryConfig};

use crate::create_check::CreateCheck;
use crate::StoreError;

/// Total time one request may spend being retried before its error is final. Bounded so a
/// dead endpoint fails a backup in about a minute instead of hanging it.
const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_MAX_RETRIES: usize = 8;

/// Opens `url` (`s3://bucket[/prefix]`) with settings from this process's environment.
///
/// # Errors
/// [`StoreError::BadUrl`] for a malformed URL or unusable settings.
pub fn open(url: &str) -> Result<(Arc<dyn ObjectStore>, String), StoreError> {
    open_with_vars(url, std::env::vars())
}

/// Opens `url` with settings from `vars` (name, value) instead of the environment: the
/// `AWS_*` names object_store understands, `AWS_CA_BUNDLE`, and `CPVAULT_STORE_RETRY_TIMEOUT`
/// (seconds) / `CPVAULT_STORE_MAX_RETRIES`. Tests use it to point a store at their own
/// server without touching the process environment.
///
/// # Errors
/// [`StoreError::BadUrl`] for a malformed URL or unusable settings; the message never
/// quotes a credential.
pub fn open_with_vars(
    url: &str,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<(Arc<dyn ObjectStore>, String), StoreError> {
    let (bucket, prefix) = parse_url(url)?;
    let display = if prefix.is_empty() {
        format!("s3://{bucket}")
    } else {
        format!("s3://{bucket}/{prefix}")
    };
    let bad = |reason: String| StoreError::BadUrl {
        url: display.clone(),
        reason,
    };

    let mut builder = AmazonS3Builder::new();
    let mut client = ClientOptions::new();
    let mut retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(8),
            base: 2.0,
        },
        max_retries: DEFAULT_MAX_RETRIES,
        retry_timeout: DEFAULT_RETRY_TIMEOUT,
    };
    let mut endpoint: Option<String> = None;
    let mut allow_http = false;
    for (name, value) in vars {
        match name.as_str() {
            "AWS_CA_BUNDLE" => {
                let pem = std::fs::read(&value)
                    .map_err(|e| bad(format!("AWS_CA_BUNDLE file '{value}': {e}")))?;
                let certs = Certificate::from_pem_bundle(&pem).map_err(|e| {
                    bad(format!(
                        "AWS_CA_BUNDLE file '{value}' is not PEM certificates: {e}"
                    ))
                })?;
                for c in certs {
                    client = client.with_root_certificate(c);
                }
                continue;
            }
            "CPVAULT_STORE_RETRY_TIMEOUT" => {
                let secs: u64 = value
                    .parse()
                    .map_err(|_| bad("CPVAULT_STORE_RETRY_TIMEOUT must be whole seconds".into()))?;
                retry.retry_timeout = Duration::from_secs(secs);
                continue;
            }
            "CPVAULT_STORE_MAX_RETRIES" => {
                retry.max_retries = value
                    .parse()
                    .map_err(|_| bad("CPVAULT_STORE_MAX_RETRIES must be a number".into()))?;
                continue;
            }
            _ => {}
        }
        if !name.starts_with("AWS_") {
            continue;
        }
        let Ok(key) = name.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() else {
            continue;
        };
        match key {
            // The URL names the bucket; a stray AWS_BUCKET must not redirect writes.
            AmazonS3ConfigKey::Bucket => {}
            AmazonS3ConfigKey::Client(k) => {
                if name == "AWS_ALLOW_HTTP" {
                    allow_http = matches!(value.to_ascii_lowercase().as_str(), "true" | "1");
                }
                client = client.with_config(k, value);
            }
            AmazonS3ConfigKey::Endpoint => {
                endpoint = Some(value.clone());
                builder = builder.with_config(key, value);
            }
            key => builder = builder.with_config(key, value),
        }
    }
    if endpoint
        .as_deref()
        .is_some_and(|e| e.starts_with("http://"))
        && !allow_http
    {
        return Err(bad(
            "the endpoint (AWS_ENDPOINT_URL) is plain http://; set AWS_ALLOW_HTTP=true to allow unencrypted traffic (test servers only), or use https://".into(),
        ));
    }
    let s3 = builder
        .with_bucket_name(&bucket)
        .with_client_options(client)
        .with_retry(retry)
        .build()
        .map_err(|e| bad(format!("S3 settings: {e}")))?;
    let inner: Arc<dyn ObjectStore> = if prefix.is_empty() {
        Arc::new(s3)
    } else {
        Arc::new(PrefixStore::new(s3, Path::from(prefix.as_str())))
    };
    Ok((Arc::new(CreateCheck::new(inner)), display))
}

/// Splits `s3://bucket/prefix` into the bucket and the prefix (no leading/trailing `/`).
fn parse_url(url: &str) -> Result<(String, String), StoreError> {
    // Never echo a URL that carries credentials back to the user.
    let bad = |reason: &str| StoreError::BadUrl {
        url: if url.contains('@') {
            "s3://<redacted>".into()
        } else {
            url.to_string()
        },
        reason: reason.to_string(),
    };
    let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if parsed.scheme() != "s3" {
        return Err(bad("not an s3:// URL"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad(
            "credentials do not belong in the store URL; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() || parsed.port().is_some() {
        return Err(bad(
            "an s3:// URL is s3://bucket/prefix; put the endpoint in AWS_ENDPOINT_URL",
        ));
    }
    let bucket = parsed.host_str().unwrap_or_default().to_string();
    if bucket.is_empty() {
        return Err(bad("no bucket: use s3://bucket/prefix"));
    }
    let prefix = parsed.path().trim_matches('/').to_string();
    if !prefix.is_empty() && Path::parse(&prefix).is_err() {
        return Err(bad(
            "the prefix has an empty, '.' or '..' segment or a character S3 keys cannot carry",
        ));
    }
    Ok((bucket, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v = vec![
            ("AWS_ACCESS_KEY_ID", "AKIDSECRETVALUE"),
            ("AWS_SECRET_ACCESS_KEY", "supersecretkey123"),
            ("AWS_SESSION_TOKEN", "sessiontokensecret"),
            ("AWS_REGION", "eu-west-1"),
        ];
        v.extend_from_slice(extra);
        v.into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn url_gives_bucket_and_prefix() {
        assert_eq!(
            parse_url("s3://b/p/q/").unwrap(),
            ("b".into(), "p/q".into())
        );
        assert_eq!(parse_url("s3://b").unwrap(), ("b".into(), "".into()));
        assert!(parse_url("s3:///p").is_err());
    }

    #[test]
    fn credentials_in_url_are_refused_and_not_echoed() {
        let e = parse_url("s3://key:topsecret@bucket/p")
            .unwrap_err()
            .to_string();
        assert!(e.contains("credentials do not belong"), "{e}");
        assert!(!e.contains("topsecret"), "{e}");
    }

    #[test]
    fn display_and_debug_never_show_credentials() {
        let (store, display) = open_with_vars("s3://bucket/pre/fix", vars(&[])).unwrap();
        assert_eq!(display, "s3://bucket/pre/fix");
        let shown = format!("{store} {store:?} {display}");
        for secret in ["AKIDSECRETVALUE", "supersecretkey123", "sessiontokensecret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn plain_http_endpoint_needs_allow_http() {
        let e = open_with_vars(
            "s3://b",
            vars(&[("AWS_ENDPOINT_URL", "http://127.0.0.1:9")]),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("AWS_ALLOW_HTTP=true"), "{e}");
        open_with_vars(
            "s3://b",
            vars(&[
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
                ("AWS_ALLOW_HTTP", "true"),
            ]),
        )
        .unwrap();
    }

    #[test]
    fn bad_retry_setting_is_named() {
        let e = open_with_vars("s3://b", vars(&[("CPVAULT_STORE_RETRY_TIMEOUT", "soon")]))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("CPVAULT_STORE_RETRY_TIMEOUT"), "{e}");
    }
}
