//! The S3 store: `s3://bucket/prefix` on AWS or an S3-compatible server, configured from the
//! usual `AWS_*` variables (endpoint, region, credentials, session token, path- or
//! virtual-hosted-style, plain HTTP for test servers, `AWS_CA_BUNDLE` for a private CA). It
//! only turns configuration into a backend; it must never put a credential into the store's
//! name, an error or a log line, and never let a server that ignores conditional writes take
//! a commit (see [`crate::create_check`]).

use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::{Certificate, ClientOptions, ObjectStore};

use crate::settings::{self, UrlRules};
use crate::StoreError;

const URL_RULES: UrlRules = UrlRules {
    scheme: "s3",
    service: "S3",
    credentials_hint: "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
    endpoint_hint: "put the endpoint in AWS_ENDPOINT_URL",
};

/// The settings that give S3 credentials explicitly; with none of them, object_store asks the
/// cloud's instance metadata service.
pub const CREDENTIAL_SETTINGS: [&str; 5] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_SKIP_SIGNATURE",
];

/// What a credentials failure says when none of [`CREDENTIAL_SETTINGS`] was given.
pub const NO_CREDENTIALS: &str = "no S3 credentials were given (looked for AWS_ACCESS_KEY_ID with AWS_SECRET_ACCESS_KEY, AWS_WEB_IDENTITY_TOKEN_FILE, AWS_CONTAINER_CREDENTIALS_RELATIVE_URI/FULL_URI, in the environment and the config's [store_settings]), and the instance metadata service gave none: set them, or run where instance credentials are served";

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
    let display = settings::display("s3", &bucket, &prefix);
    let bad = |reason: String| StoreError::BadUrl {
        url: display.clone(),
        reason,
    };

    let mut builder = AmazonS3Builder::new();
    let mut client = ClientOptions::new();
    let mut retry = settings::default_retry();
    let mut endpoint: Option<String> = None;
    let mut allow_http = false;
    let mut unsigned_set = false;
    for (name, value) in vars {
        if settings::apply_retry_setting(&mut retry, &name, &value).map_err(&bad)? {
            continue;
        }
        if name == "AWS_CA_BUNDLE" {
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
                    allow_http = settings::is_true(&value);
                }
                client = client.with_config(k, value);
            }
            AmazonS3ConfigKey::Endpoint => {
                endpoint = Some(value.clone());
                builder = builder.with_config(key, value);
            }
            AmazonS3ConfigKey::UnsignedPayload => {
                unsigned_set = true;
                builder = builder.with_config(key, value);
            }
            key => builder = builder.with_config(key, value),
        }
    }
    if !unsigned_set && unsigned_payload_by_default(endpoint.as_deref()) {
        builder = builder.with_unsigned_payload(true);
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
    Ok((settings::wrap(s3, &prefix), display))
}

/// Whether uploads skip SigV4's payload hash (`UNSIGNED-PAYLOAD`) unless
/// `AWS_UNSIGNED_PAYLOAD` says otherwise: over HTTPS (AWS's own endpoints, or an `https://`
/// endpoint), where TLS already protects the body in transit and the archive carries its own
/// sha256, checked by every verify. Hashing 250 MB for the signature costs both ends CPU on
/// each backup. Over plain `http://` (test servers) the signed payload is kept, as it is the
/// only check on the body there.
fn unsigned_payload_by_default(endpoint: Option<&str>) -> bool {
    !endpoint.is_some_and(|e| e.to_ascii_lowercase().starts_with("http://"))
}

/// Splits `s3://bucket/prefix` into the bucket and the prefix (no leading/trailing `/`).
fn parse_url(url: &str) -> Result<(String, String), StoreError> {
    settings::parse_bucket_url(url, &URL_RULES)
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
    fn the_payload_hash_is_skipped_over_https_only() {
        assert!(unsigned_payload_by_default(None), "AWS itself: https");
        assert!(unsigned_payload_by_default(Some(
            "https://minio.example:9000"
        )));
        assert!(!unsigned_payload_by_default(Some("http://127.0.0.1:9000")));
        assert!(!unsigned_payload_by_default(Some("HTTP://127.0.0.1:9000")));
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
