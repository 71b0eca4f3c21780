//! The Azure Blob store: `az://container/prefix` on an Azure storage account or on the Azurite
//! emulator, configured from the usual `AZURE_*` variables (account name and key, SAS token,
//! bearer token, service principal or managed identity, endpoint override) plus
//! `AZURE_STORAGE_USE_EMULATOR` and `AZURITE_BLOB_STORAGE_URL` for Azurite. It only turns
//! configuration into a backend; it must never put a credential into the store's name, an
//! error or a log line, and never let a server that ignores conditional writes take a commit
//! (see [`crate::create_check`]).

use std::sync::Arc;

use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::{ClientConfigKey, ClientOptions, ObjectStore};

use crate::settings::{self, UrlRules};
use crate::StoreError;

/// Azurite's well-known development account: published by Microsoft, not a secret.
const EMULATOR_ACCOUNT: &str = "devstoreaccount1";
const EMULATOR_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const EMULATOR_URL: &str = "http://127.0.0.1:10000";

const URL_RULES: UrlRules = UrlRules {
    scheme: "az",
    service: "Azure blob",
    credentials_hint: "put the account in AZURE_STORAGE_ACCOUNT_NAME and the key in AZURE_STORAGE_ACCOUNT_KEY (or a SAS token in AZURE_STORAGE_SAS_KEY)",
    endpoint_hint: "put the endpoint in AZURE_STORAGE_ENDPOINT (AZURITE_BLOB_STORAGE_URL for Azurite)",
};

/// Opens `url` with settings from `vars` (name, value) instead of the environment: the
/// `AZURE_*` names object_store understands, `AZURE_STORAGE_USE_EMULATOR=true` with an
/// optional `AZURITE_BLOB_STORAGE_URL` (the emulator's base URL, default
/// `http://127.0.0.1:10000`), and `CPVAULT_STORE_RETRY_TIMEOUT` (seconds) /
/// `CPVAULT_STORE_MAX_RETRIES`. Tests use it to point a store at their own server without
/// touching the process environment.
///
/// # Errors
/// [`StoreError::BadUrl`] for a malformed URL or unusable settings; the message never
/// quotes a credential.
pub fn open_with_vars(
    url: &str,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<(Arc<dyn ObjectStore>, String), StoreError> {
    let (container, prefix) = parse_url(url)?;
    let display = settings::display("az", &container, &prefix);
    let bad = |reason: String| StoreError::BadUrl {
        url: display.clone(),
        reason,
    };

    let mut builder = MicrosoftAzureBuilder::new();
    let mut client = ClientOptions::new();
    let mut retry = settings::default_retry();
    let (mut emulator, mut emulator_url) = (false, None::<String>);
    let (mut account, mut endpoint) = (None::<String>, None::<String>);
    let (mut allow_http, mut has_credential) = (false, false);
    for (name, value) in vars {
        if settings::apply_retry_setting(&mut retry, &name, &value).map_err(&bad)? {
            continue;
        }
        if name == "AZURITE_BLOB_STORAGE_URL" {
            emulator_url = Some(value);
            continue;
        }
        if !name.starts_with("AZURE_") {
            continue;
        }
        let Ok(key) = name.to_ascii_lowercase().parse::<AzureConfigKey>() else {
            continue;
        };
        match key {
            // The URL names the container; a stray AZURE_CONTAINER_NAME must not redirect writes.
            AzureConfigKey::ContainerName => {}
            AzureConfigKey::UseEmulator => emulator = settings::is_true(&value),
            AzureConfigKey::AccountName => account = Some(value),
            AzureConfigKey::Endpoint => endpoint = Some(value),
            AzureConfigKey::Client(k) => {
                if k == ClientConfigKey::AllowHttp {
                    allow_http = settings::is_true(&value);
                }
                client = client.with_config(k, value);
            }
            key => {
                has_credential |= matches!(
                    key,
                    AzureConfigKey::AccessKey | AzureConfigKey::SasKey | AzureConfigKey::Token
                );
                builder = builder.with_config(key, value);
            }
        }
    }

    if emulator {
        // object_store's own emulator mode reads AZURITE_BLOB_STORAGE_URL from the process
        // environment behind our back; addressing Azurite as an ordinary path-style endpoint
        // keeps every setting in `vars`.
        let base = emulator_url.as_deref().unwrap_or(EMULATOR_URL);
        let base = url::Url::parse(base)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                bad("AZURITE_BLOB_STORAGE_URL must be a URL like http://127.0.0.1:10000".into())
            })?;
        let account = account.get_or_insert_with(|| EMULATOR_ACCOUNT.to_string());
        endpoint = Some(format!("{}/{account}", base.as_str().trim_end_matches('/')));
        if !has_credential {
            builder = builder.with_access_key(EMULATOR_KEY);
        }
        client = client.with_allow_http(true);
    } else if endpoint
        .as_deref()
        .is_some_and(|e| e.starts_with("http://"))
        && !allow_http
    {
        return Err(bad(
            "the endpoint (AZURE_STORAGE_ENDPOINT) is plain http://; set AZURE_ALLOW_HTTP=true to allow unencrypted traffic (test servers only), or use https://".into(),
        ));
    }
    if let Some(account) = account {
        builder = builder.with_account(account);
    }
    if let Some(endpoint) = endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    let azure = builder
        .with_container_name(&container)
        .with_client_options(client)
        .with_retry(retry)
        .build()
        .map_err(|e| {
            let msg = e.to_string();
            // The base64 decoder's message quotes a byte of the key it choked on.
            if msg.contains("Access Key") {
                bad("AZURE_STORAGE_ACCOUNT_KEY is not valid base64; copy the key again from the storage account's access keys".into())
            } else if msg.contains("Account must be specified") {
                bad("no storage account: set AZURE_STORAGE_ACCOUNT_NAME (or AZURE_STORAGE_USE_EMULATOR=true for Azurite)".into())
            } else {
                bad(format!("Azure settings: {msg}"))
            }
        })?;
    Ok((settings::wrap(azure, &prefix), display))
}

/// Splits `az://container/prefix` into the container and the prefix (no leading/trailing `/`).
fn parse_url(url: &str) -> Result<(String, String), StoreError> {
    // A SAS token pasted into the URL is a credential: refuse it without echoing it.
    if url.contains('?') {
        return Err(StoreError::BadUrl {
            url: "az://<redacted>".into(),
            reason: "a SAS token does not belong in the store URL; set AZURE_STORAGE_SAS_KEY"
                .into(),
        });
    }
    let (container, prefix) = settings::parse_bucket_url(url, &URL_RULES)?;
    if !valid_container(&container) {
        return Err(StoreError::BadUrl {
            url: url.to_string(),
            reason: "a container name is 3-63 lowercase letters, digits and single hyphens, starting and ending with a letter or digit".into(),
        });
    }
    Ok((container, prefix))
}

fn valid_container(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

#[cfg(test)]
mod tests {
    use super::*;

    // Base64, so the builder accepts it as a key; the tests look for it in what is shown.
    const KEY: &str = "c3VwZXJzZWNyZXRrZXlzdXBlcnNlY3JldGtleQ==";

    fn vars(extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v = vec![
            ("AZURE_STORAGE_ACCOUNT_NAME", "acct"),
            ("AZURE_STORAGE_ACCOUNT_KEY", KEY),
        ];
        v.extend_from_slice(extra);
        v.into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn err(url: &str, vars: Vec<(String, String)>) -> String {
        open_with_vars(url, vars).err().unwrap().to_string()
    }

    #[test]
    fn url_gives_container_and_prefix() {
        assert_eq!(
            parse_url("az://backups/p/q/").unwrap(),
            ("backups".into(), "p/q".into())
        );
        assert_eq!(parse_url("az://abc").unwrap(), ("abc".into(), "".into()));
        assert!(parse_url("az:///p").is_err());
        for bad in ["az://Upper", "az://ab", "az://a--b", "az://-ab", "az://a_b"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_in_url_are_refused_and_not_echoed() {
        for url in [
            "az://acct:topsecret@backups/p",
            "az://backups/p?sv=2024&sig=topsecret",
        ] {
            let e = parse_url(url).unwrap_err().to_string();
            assert!(
                e.contains("not belong") && e.contains("AZURE_STORAGE_"),
                "{e}"
            );
            assert!(!e.contains("topsecret"), "{e}");
        }
    }

    #[test]
    fn display_and_debug_never_show_credentials() {
        let sas = "sv=2024-01-01&sig=sassecretvalue";
        let sas_only = vec![
            ("AZURE_STORAGE_ACCOUNT_NAME".to_string(), "acct".to_string()),
            ("AZURE_STORAGE_SAS_KEY".to_string(), sas.to_string()),
        ];
        for v in [vars(&[]), sas_only] {
            let (store, display) = open_with_vars("az://backups/pre/fix", v).unwrap();
            assert_eq!(display, "az://backups/pre/fix");
            let shown = format!("{store} {store:?} {display}");
            for secret in [KEY, "sassecretvalue"] {
                assert!(!shown.contains(secret), "{shown}");
            }
        }
    }

    #[test]
    fn a_key_that_is_not_base64_is_named_not_quoted() {
        let e = err(
            "az://backups",
            vars(&[("AZURE_STORAGE_ACCOUNT_KEY", "not-base64-topsecret!")]),
        );
        assert!(
            e.contains("AZURE_STORAGE_ACCOUNT_KEY is not valid base64"),
            "{e}"
        );
        assert!(!e.contains("topsecret"), "{e}");
    }

    #[test]
    fn plain_http_endpoint_needs_allow_http() {
        let endpoint = ("AZURE_STORAGE_ENDPOINT", "http://127.0.0.1:9/acct");
        let e = err("az://backups", vars(&[endpoint]));
        assert!(e.contains("AZURE_ALLOW_HTTP=true"), "{e}");
        open_with_vars(
            "az://backups",
            vars(&[endpoint, ("AZURE_ALLOW_HTTP", "true")]),
        )
        .unwrap();
    }

    #[test]
    fn emulator_needs_no_account_and_checks_its_url() {
        let emu = |extra: &[(&str, &str)]| {
            let mut v = vec![("AZURE_STORAGE_USE_EMULATOR", "true")];
            v.extend_from_slice(extra);
            v.into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        open_with_vars("az://backups", emu(&[])).unwrap();
        open_with_vars(
            "az://backups",
            emu(&[("AZURITE_BLOB_STORAGE_URL", "http://127.0.0.1:10123/")]),
        )
        .unwrap();
        let e = err(
            "az://backups",
            emu(&[("AZURITE_BLOB_STORAGE_URL", "127.0.0.1:10123")]),
        );
        assert!(e.contains("AZURITE_BLOB_STORAGE_URL must be a URL"), "{e}");
    }

    #[test]
    fn missing_account_says_which_variable() {
        let e = err("az://backups", Vec::new());
        assert!(e.contains("AZURE_STORAGE_ACCOUNT_NAME"), "{e}");
    }

    #[test]
    fn bad_retry_setting_is_named() {
        let e = err(
            "az://backups",
            vars(&[("CPVAULT_STORE_MAX_RETRIES", "lots")]),
        );
        assert!(e.contains("CPVAULT_STORE_MAX_RETRIES"), "{e}");
    }
}
