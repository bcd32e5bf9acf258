//! One typed configuration, loaded once at start: defaults, then the TOML file, then
//! `MODELGATE__SECTION__KEY` environment variables, then command-line flags.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use figment::Figment;
use figment::providers::{Env, Format as _, Serialized, Toml};
use gateway::GatewayConfig;
use registry::storage::StorageConfig;
use runner::RunnerConfig;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where `dev` keeps its SQLite file, blobs, artifact cache, admin key and signing key.
    pub data_dir: PathBuf,
    pub database: DatabaseConfig,
    pub storage: StorageConfig,
    pub gateway: GatewayConfig,
    pub runner: RunnerConfig,
    pub log: LogConfig,
    pub tracing: TracingConfig,
    pub metrics: crate::metrics::MetricsConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://…` or `sqlite://…`; default: a SQLite file in the data folder.
    #[serde(serialize_with = "serialize_secret")]
    pub url: Option<SecretString>,
    /// A file holding the URL (for mounted secrets); wins over `url`.
    pub url_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `compact` for people, `json` for log pipelines.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `gateway=debug,info`; `RUST_LOG` wins.
    pub filter: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Compact,
    Json,
}

/// Export of spans to an OpenTelemetry collector. Off unless an endpoint is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracingConfig {
    /// OTLP/gRPC endpoint of a collector (`http://otel-collector:4317`). Spans that `filter`
    /// lets through (the request, its gRPC call on the runner) are exported in batches; the
    /// caller's `traceparent` is their parent.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// A tracing filter for the exported spans, apart from the log's (`RUST_LOG` does not
    /// change it): quiet logs still export every request's spans.
    pub filter: String,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self { otlp_endpoint: None, service_name: "modelgate".into(), filter: "info".into() }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Compact, filter: "info".into() }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("modelgate-data"),
            database: DatabaseConfig::default(),
            storage: StorageConfig::default(),
            gateway: GatewayConfig::default(),
            runner: RunnerConfig::default(),
            log: LogConfig::default(),
            tracing: TracingConfig::default(),
            metrics: crate::metrics::MetricsConfig::default(),
        }
    }
}

fn serialize_secret<S: serde::Serializer>(value: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(secret) => s.serialize_str(secret.expose_secret()),
        None => s.serialize_none(),
    }
}

impl Config {
    /// Defaults, then `file` (if given), then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            anyhow::ensure!(file.exists(), "config file {} does not exist", file.display());
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(Env::prefixed("MODELGATE__").split("__"));
        figment.extract().context("invalid configuration")
    }

    /// The database URL: the file, the setting, or a SQLite file in the data folder.
    pub fn database_url(&self) -> anyhow::Result<SecretString> {
        if let Some(file) = &self.database.url_file {
            let url = std::fs::read_to_string(file)
                .with_context(|| format!("reading database.url_file {}", file.display()))?;
            return Ok(SecretString::from(url.trim().to_owned()));
        }
        if let Some(url) = &self.database.url {
            return Ok(url.clone());
        }
        Ok(SecretString::from(format!("sqlite://{}", self.data_dir.join("modelgate.db").display())))
    }

    /// The storage settings, with the default of a `blobs` folder in the data folder.
    pub fn storage(&self) -> anyhow::Result<StorageConfig> {
        let mut storage = self.storage.clone();
        if storage.url.is_empty() {
            let dir = absolute(&self.data_dir.join("blobs"))?;
            storage.url = url::Url::from_directory_path(&dir)
                .map_err(|()| anyhow::anyhow!("cannot make a file:// URL of {}", dir.display()))?
                .to_string();
        }
        Ok(storage)
    }

    pub fn runner_cache_dir(&self) -> PathBuf {
        self.runner.cache_dir.clone().unwrap_or_else(|| self.data_dir.join("artifacts"))
    }

    pub fn signing_key_file(&self) -> PathBuf {
        self.gateway.signing_key_file.clone().unwrap_or_else(|| self.data_dir.join("jwt-signing-key.pem"))
    }

    pub fn admin_key_file(&self) -> PathBuf {
        self.data_dir.join("admin.key")
    }
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_put_everything_under_the_data_dir() {
        let config = Config::default();
        assert_eq!(
            config.database_url().map(|u| u.expose_secret().to_owned()).ok().as_deref(),
            Some("sqlite://modelgate-data/modelgate.db")
        );
        assert_eq!(config.gateway.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.runner_cache_dir(), PathBuf::from("modelgate-data/artifacts"));
    }

    #[test]
    fn a_toml_file_overrides_defaults_and_unknown_keys_fail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("modelgate.toml");
        std::fs::write(&file, "[gateway]\nlisten = \"0.0.0.0:9000\"\n[storage]\nurl = \"s3://bucket/prefix\"\nendpoint = \"http://127.0.0.1:9000\"\n")
            .expect("write");
        let config = Config::load(Some(&file)).expect("loads");
        assert_eq!(config.gateway.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(config.storage.url, "s3://bucket/prefix");
        std::fs::write(&file, "[gateway]\nlisen = \"0.0.0.0:9000\"\n").expect("write");
        assert!(Config::load(Some(&file)).is_err(), "a misspelt key must fail fast");
    }

    /// The configuration reference in docs/OPERATIONS.md (its first TOML block).
    fn reference() -> &'static str {
        let docs = include_str!("../docs/OPERATIONS.md");
        let start = docs.find("## Configuration").expect("a configuration section");
        let block = &docs[start..];
        let open = block.find("```toml\n").expect("a TOML block") + "```toml\n".len();
        &block[open..open + block[open..].find("```").expect("the block ends")]
    }

    #[test]
    fn the_documented_configuration_loads_as_it_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("reference.toml");
        std::fs::write(&file, reference()).expect("write");
        let config = Config::load(Some(&file)).expect("every documented key exists and every value parses");
        assert_eq!(config.metrics.listen.map(|l| l.port()), Some(9464));
    }

    #[test]
    fn every_setting_is_in_the_configuration_reference() {
        // Which keys each section of the reference names (`key =`, commented out or not).
        let mut documented = std::collections::HashSet::new();
        let mut section = String::new();
        for line in reference().lines().map(str::trim) {
            let line = line.trim_start_matches("# ");
            if let Some(header) = line.strip_prefix('[') {
                section =
                    header.trim_matches(|c| c == '[' || c == ']').split(']').next().unwrap_or_default().to_owned();
                documented.insert(section.clone());
            } else if let Some((key, _)) = line.split_once(" = ") {
                let key = key.trim();
                documented.insert(if section.is_empty() { key.to_owned() } else { format!("{section}.{key}") });
            }
        }
        fn walk(
            prefix: &str,
            value: &serde_json::Value,
            documented: &std::collections::HashSet<String>,
            missing: &mut Vec<String>,
        ) {
            let Some(fields) = value.as_object() else { return };
            for (key, value) in fields {
                let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                let is_section = value.is_object() && documented.contains(&path) && !path.ends_with("options");
                if is_section {
                    walk(&path, value, documented, missing);
                } else if !documented.contains(&path) {
                    missing.push(path);
                }
            }
        }
        let mut missing = Vec::new();
        walk("", &serde_json::to_value(Config::default()).expect("the defaults serialize"), &documented, &mut missing);
        assert!(missing.is_empty(), "settings missing from docs/OPERATIONS.md's configuration reference: {missing:?}");
    }
}
