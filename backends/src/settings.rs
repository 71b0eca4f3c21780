//! What every cloud store module reads and builds the same way: the `scheme://bucket/prefix`
//! URL, the retry limits (`CPVAULT_STORE_RETRY_TIMEOUT`, `CPVAULT_STORE_MAX_RETRIES`), and the
//! wrapping of a built client in its prefix and in the create-if-absent probe. It holds no
//! store's own settings, and it must never echo a URL that carries credentials.

use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ObjectStore, RetryConfig};

use crate::create_check::CreateCheck;
use crate::StoreError;

/// Total time one request may spend being retried before its error is final. Bounded so a
/// dead endpoint fails a backup in about a minute instead of hanging it.
pub(crate) const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(60);
pub(crate) const DEFAULT_MAX_RETRIES: usize = 8;

/// The retry policy every cloud store starts from.
pub(crate) fn default_retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(8),
            base: 2.0,
        },
        max_retries: DEFAULT_MAX_RETRIES,
        retry_timeout: DEFAULT_RETRY_TIMEOUT,
    }
}

/// Applies `name=value` to `retry` when it is one of the retry settings. Returns whether it
/// was, or why the value is unusable.
pub(crate) fn apply_retry_setting(
    retry: &mut RetryConfig,
    name: &str,
    value: &str,
) -> Result<bool, String> {
    match name {
        "CPVAULT_STORE_RETRY_TIMEOUT" => {
            let secs: u64 = value
                .parse()
                .map_err(|_| "CPVAULT_STORE_RETRY_TIMEOUT must be whole seconds".to_string())?;
            retry.retry_timeout = Duration::from_secs(secs);
            Ok(true)
        }
        "CPVAULT_STORE_MAX_RETRIES" => {
            retry.max_retries = value
                .parse()
                .map_err(|_| "CPVAULT_STORE_MAX_RETRIES must be a number".to_string())?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// `true`/`1` (any case), as object_store reads its boolean settings.
pub(crate) fn is_true(value: &str) -> bool {
    matches!(value.to_ascii_lowercase().as_str(), "true" | "1")
}

/// How one kind of store names itself in URL errors.
pub(crate) struct UrlRules {
    /// `s3`, `gs`, …
    pub scheme: &'static str,
    /// `S3`, `GCS`, … as the user knows the service.
    pub service: &'static str,
    /// Where credentials go instead of the URL.
    pub credentials_hint: &'static str,
    /// Where a custom endpoint goes instead of the URL.
    pub endpoint_hint: &'static str,
}

/// Splits `scheme://bucket/prefix` into the bucket and the prefix (no leading/trailing `/`).
pub(crate) fn parse_bucket_url(
    url: &str,
    rules: &UrlRules,
) -> Result<(String, String), StoreError> {
    let scheme = rules.scheme;
    // Never echo a URL that carries credentials back to the user.
    let bad = |reason: &str| StoreError::BadUrl {
        url: if url.contains('@') {
            format!("{scheme}://<redacted>")
        } else {
            url.to_string()
        },
        reason: reason.to_string(),
    };
    let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if parsed.scheme() != scheme {
        return Err(bad(&format!(
            "not a URL of the form {scheme}://bucket/prefix"
        )));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad(&format!(
            "credentials do not belong in the store URL; {}",
            rules.credentials_hint
        )));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() || parsed.port().is_some() {
        return Err(bad(&format!(
            "the URL takes the form {scheme}://bucket/prefix; {}",
            rules.endpoint_hint
        )));
    }
    let bucket = parsed.host_str().unwrap_or_default().to_string();
    if bucket.is_empty() {
        return Err(bad(&format!("no bucket: use {scheme}://bucket/prefix")));
    }
    let prefix = parsed.path().trim_matches('/').to_string();
    if !prefix.is_empty() && Path::parse(&prefix).is_err() {
        return Err(bad(&format!(
            "the prefix has an empty, '.' or '..' segment or a character {} keys cannot carry",
            rules.service
        )));
    }
    Ok((bucket, prefix))
}

/// How a store is shown to the user: its URL without anything but bucket and prefix.
pub(crate) fn display(scheme: &str, bucket: &str, prefix: &str) -> String {
    if prefix.is_empty() {
        format!("{scheme}://{bucket}")
    } else {
        format!("{scheme}://{bucket}/{prefix}")
    }
}

/// Scopes `store` to `prefix` and puts the create-if-absent probe in front of it.
pub(crate) fn wrap(store: impl ObjectStore, prefix: &str) -> Arc<dyn ObjectStore> {
    let inner: Arc<dyn ObjectStore> = if prefix.is_empty() {
        Arc::new(store)
    } else {
        Arc::new(PrefixStore::new(store, Path::from(prefix)))
    };
    Arc::new(CreateCheck::new(inner))
}
