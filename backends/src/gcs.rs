//! The GCS store: `gs://bucket/prefix` on Google Cloud Storage or a GCS-compatible server,
//! configured from the usual variables — a service account (`GOOGLE_SERVICE_ACCOUNT` or its
//! alias `GOOGLE_SERVICE_ACCOUNT_PATH` naming the key file, or `GOOGLE_SERVICE_ACCOUNT_KEY`
//! holding the key JSON), application default credentials (`GOOGLE_APPLICATION_CREDENTIALS`,
//! else gcloud's well-known file), a static `GOOGLE_BEARER_TOKEN`, and failing all of those
//! the metadata server of the GCP machine it runs on; `GOOGLE_BASE_URL` points it at another
//! server. It only turns configuration into a backend; it must never put a credential into
//! the store's name, an error or a log line, and never let a server that ignores generation
//! preconditions take a commit (see [`crate::create_check`]).
//!
//! A server without authentication (an emulator) still needs a credential setting: the
//! object_store 0.14 client fetches a token before every write, and with none configured it
//! asks the GCP metadata server, which does not exist elsewhere (`GOOGLE_SKIP_SIGNATURE`
//! unsigns only reads). The emulator recipe, as object_store's own CI uses it, is a service
//! account key with `"disable_oauth": true`, which makes the client send an empty token and
//! never fetch one; its key fields may be empty:
//!
//! ```text
//! GOOGLE_SERVICE_ACCOUNT_KEY={"disable_oauth":true,"client_email":"","private_key":"","private_key_id":""}
//! GOOGLE_BASE_URL=http://127.0.0.1:4443
//! GOOGLE_ALLOW_HTTP=true
//! ```
//!
//! A real service account key needs no network either: the client signs its own short-lived
//! JWT with the key instead of exchanging it for an OAuth token.

use std::sync::Arc;

use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::{ClientOptions, ObjectStore};

use crate::settings::{self, UrlRules};
use crate::StoreError;

const URL_RULES: UrlRules = UrlRules {
    scheme: "gs",
    service: "GCS",
    credentials_hint:
        "set GOOGLE_SERVICE_ACCOUNT (a key file) or GOOGLE_APPLICATION_CREDENTIALS instead",
    endpoint_hint: "put another server's URL in GOOGLE_BASE_URL",
};

/// Opens `url` with settings from `vars` (name, value) instead of the environment: the
/// `GOOGLE_*` names object_store understands (credentials as in the module docs,
/// `GOOGLE_BASE_URL`, client options such as `GOOGLE_ALLOW_HTTP` or `GOOGLE_TIMEOUT`), and
/// `CPVAULT_STORE_RETRY_TIMEOUT` (seconds) / `CPVAULT_STORE_MAX_RETRIES`. A `GOOGLE_BUCKET`
/// is ignored: the URL names the bucket. Tests use it to point a store at their own server
/// without touching the process environment.
///
/// # Errors
/// [`StoreError::BadUrl`] for a malformed URL or unusable settings (an unreadable or
/// malformed key file, a key given both as a file and inline, a plain `http://` base URL
/// without `GOOGLE_ALLOW_HTTP=true`); the message never quotes a credential.
pub fn open_with_vars(
    url: &str,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<(Arc<dyn ObjectStore>, String), StoreError> {
    let (bucket, prefix) = settings::parse_bucket_url(url, &URL_RULES)?;
    let display = settings::display("gs", &bucket, &prefix);
    let bad = |reason: String| StoreError::BadUrl {
        url: display.clone(),
        reason,
    };

    let mut builder = GoogleCloudStorageBuilder::new();
    // Not the builder's default, which allows plain HTTP to any server.
    let mut client = ClientOptions::new();
    let mut retry = settings::default_retry();
    let mut base_url: Option<String> = None;
    let mut allow_http = false;
    let mut secrets: Vec<String> = Vec::new();
    for (name, value) in vars {
        if settings::apply_retry_setting(&mut retry, &name, &value).map_err(&bad)? {
            continue;
        }
        if !name.starts_with("GOOGLE_") {
            continue;
        }
        let Ok(key) = name.to_ascii_lowercase().parse::<GoogleConfigKey>() else {
            continue;
        };
        match key {
            GoogleConfigKey::Bucket => {}
            GoogleConfigKey::Client(k) => {
                if name == "GOOGLE_ALLOW_HTTP" {
                    allow_http = settings::is_true(&value);
                }
                client = client.with_config(k, value);
            }
            GoogleConfigKey::BaseUrl => {
                base_url = Some(value.clone());
                builder = builder.with_config(key, value);
            }
            GoogleConfigKey::ServiceAccountKey | GoogleConfigKey::BearerToken => {
                secrets.push(value.clone());
                builder = builder.with_config(key, value);
            }
            key => builder = builder.with_config(key, value),
        }
    }
    if base_url
        .as_deref()
        .is_some_and(|u| u.starts_with("http://"))
        && !allow_http
    {
        return Err(bad(
            "the base URL (GOOGLE_BASE_URL) is plain http://; set GOOGLE_ALLOW_HTTP=true to allow unencrypted traffic (test servers only), or use https://".into(),
        ));
    }
    let gcs = builder
        .with_bucket_name(&bucket)
        .with_client_options(client)
        .with_retry(retry)
        .build()
        .map_err(|e| {
            bad(format!(
                "GCS settings: {}; check GOOGLE_SERVICE_ACCOUNT, GOOGLE_SERVICE_ACCOUNT_KEY and GOOGLE_APPLICATION_CREDENTIALS",
                redact(&e.to_string(), &secrets)
            ))
        })?;
    Ok((settings::wrap(gcs, &prefix), display))
}

/// `message` with every secret value in it replaced. object_store's messages quote file paths
/// and parser positions, not key material, but a parser error may quote a value it choked on.
fn redact(message: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .filter(|s| !s.is_empty())
        .fold(message.to_string(), |m, s| {
            m.replace(s.as_str(), "<redacted>")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_SECRET: &str = "TOPSECRETKEYMATERIAL";
    const TOKEN: &str = "ya29.bearertokensecret";

    fn emulator_key() -> String {
        format!(
            r#"{{"disable_oauth":true,"client_email":"x@example.iam","private_key":"{KEY_SECRET}","private_key_id":"k1"}}"#
        )
    }

    fn vars(extra: &[(&str, &str)]) -> Vec<(String, String)> {
        extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse(url: &str) -> Result<(String, String), StoreError> {
        settings::parse_bucket_url(url, &URL_RULES)
    }

    #[test]
    fn url_gives_bucket_and_prefix() {
        assert_eq!(parse("gs://b/p/q/").unwrap(), ("b".into(), "p/q".into()));
        assert_eq!(parse("gs://b").unwrap(), ("b".into(), "".into()));
        assert!(parse("gs:///p").is_err());
        assert!(parse("s3://b/p").is_err());
        let e = parse("gs://b:4443/p").unwrap_err().to_string();
        assert!(e.contains("GOOGLE_BASE_URL"), "{e}");
    }

    #[test]
    fn credentials_in_url_are_refused_and_not_echoed() {
        let e = parse("gs://key:topsecret@bucket/p")
            .unwrap_err()
            .to_string();
        assert!(e.contains("credentials do not belong"), "{e}");
        assert!(!e.contains("topsecret"), "{e}");
    }

    #[test]
    fn display_and_debug_never_show_credentials() {
        let key = emulator_key();
        let (store, display) = open_with_vars(
            "gs://bucket/pre/fix",
            vars(&[
                ("GOOGLE_SERVICE_ACCOUNT_KEY", &key),
                ("GOOGLE_BEARER_TOKEN", TOKEN),
            ]),
        )
        .unwrap();
        assert_eq!(display, "gs://bucket/pre/fix");
        let shown = format!("{store} {store:?} {display}");
        for secret in [KEY_SECRET, TOKEN] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn a_stray_google_bucket_does_not_redirect_the_store() {
        let key = emulator_key();
        let (store, display) = open_with_vars(
            "gs://right",
            vars(&[
                ("GOOGLE_SERVICE_ACCOUNT_KEY", &key),
                ("GOOGLE_BUCKET", "wrong"),
            ]),
        )
        .unwrap();
        assert_eq!(display, "gs://right");
        assert!(store.to_string().contains("(right)"), "{store}");
    }

    #[test]
    fn plain_http_base_url_needs_allow_http() {
        let key = emulator_key();
        let base = [
            ("GOOGLE_SERVICE_ACCOUNT_KEY", key.as_str()),
            ("GOOGLE_BASE_URL", "http://127.0.0.1:9"),
        ];
        let e = open_with_vars("gs://b", vars(&base))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("GOOGLE_ALLOW_HTTP=true"), "{e}");
        let mut allowed = base.to_vec();
        allowed.push(("GOOGLE_ALLOW_HTTP", "true"));
        open_with_vars("gs://b", vars(&allowed)).unwrap();
    }

    #[test]
    fn bad_retry_setting_is_named() {
        let e = open_with_vars("gs://b", vars(&[("CPVAULT_STORE_MAX_RETRIES", "many")]))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("CPVAULT_STORE_MAX_RETRIES"), "{e}");
    }

    #[test]
    fn unusable_key_is_reported_without_its_material() {
        // A key object_store cannot parse as RSA: the error must name the setting, not the key.
        let key = format!(
            r#"{{"client_email":"x@example.iam","private_key":"-----BEGIN PRIVATE KEY-----\n{KEY_SECRET}\n-----END PRIVATE KEY-----\n","private_key_id":"k1"}}"#
        );
        let e = open_with_vars("gs://b", vars(&[("GOOGLE_SERVICE_ACCOUNT_KEY", &key)]))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("gs://b") && e.contains("GOOGLE_SERVICE_ACCOUNT"),
            "{e}"
        );
        assert!(!e.contains(KEY_SECRET), "{e}");
        // Not JSON at all: serde's message quotes positions, and the value is redacted anyway.
        let e = open_with_vars(
            "gs://b",
            vars(&[("GOOGLE_SERVICE_ACCOUNT_KEY", KEY_SECRET)]),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(!e.contains(KEY_SECRET), "{e}");
    }

    #[test]
    fn a_missing_key_file_is_named_under_every_variable() {
        for variable in [
            "GOOGLE_SERVICE_ACCOUNT",
            "GOOGLE_SERVICE_ACCOUNT_PATH",
            "GOOGLE_APPLICATION_CREDENTIALS",
        ] {
            let e = open_with_vars(
                "gs://b",
                vars(&[(variable, "/nonexistent/cpvault-sa.json")]),
            )
            .err()
            .unwrap_or_else(|| panic!("{variable} was not read"))
            .to_string();
            assert!(e.contains("/nonexistent/cpvault-sa.json"), "{e}");
        }
    }
}
