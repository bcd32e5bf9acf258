//! The command line's HTTP client of the management API.

use anyhow::Context as _;
use reqwest::{Client, Method, RequestBuilder, Response};
use serde_json::Value;

/// Where the gateway is and the key to call it with.
#[derive(Debug, clap::Args)]
pub struct Gateway {
    /// The gateway's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "MODELGATE_URL")]
    pub url: String,
    /// An API key (its role must allow the command).
    #[arg(long, env = "MODELGATE_KEY", hide_env_values = true)]
    pub key: String,
}

impl Gateway {
    pub fn api(&self) -> anyhow::Result<Api> {
        Ok(Api {
            client: Client::new(),
            base: url::Url::parse(&self.url).context("invalid --url")?,
            key: self.key.clone(),
        })
    }
}

pub struct Api {
    client: Client,
    base: url::Url,
    key: String,
}

impl Api {
    /// A request to the path made of `segments`, each percent-encoded.
    pub fn request(&self, method: Method, segments: &[&str]) -> anyhow::Result<RequestBuilder> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("the gateway URL cannot have a path"))?
            .pop_if_empty()
            .extend(segments);
        Ok(self.client.request(method, url).bearer_auth(&self.key))
    }

    /// Every item of a paginated list.
    pub async fn list_all(&self, segments: &[&str], query: &[(&str, &str)]) -> anyhow::Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut request = self.request(Method::GET, segments)?.query(query).query(&[("limit", "1000")]);
            if let Some(c) = &cursor {
                request = request.query(&[("cursor", c)]);
            }
            let page = expect_ok(request.send().await?).await?;
            items.extend(page["data"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return Ok(items),
            }
        }
    }
}

/// The error message of a non-success answer, with every validation problem listed.
pub async fn failure(response: Response) -> anyhow::Error {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let message = body["error"]["message"].as_str().unwrap_or("no message").to_owned();
    let mut text = format!("{status}: {message}");
    if let Some(problems) = body["error"]["details"]["problems"].as_array() {
        for p in problems {
            let file = p["file"].as_str().map(|f| format!("{f}: ")).unwrap_or_default();
            text.push_str(&format!("\n  - {file}{}", p["message"].as_str().unwrap_or_default()));
        }
    }
    anyhow::anyhow!(text)
}

pub async fn expect_ok(response: Response) -> anyhow::Result<Value> {
    if response.status().is_success() { Ok(response.json().await?) } else { Err(failure(response).await) }
}

/// Splits `tenant/model` (the model part may carry `:alias` or `@version`).
pub fn split_target(target: &str) -> anyhow::Result<(&str, &str)> {
    target.split_once('/').context("name the model as tenant/model, e.g. acme/minilm")
}
