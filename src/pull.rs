//! `modelgate pull tenant/model[:alias|@version] DIR`: downloads a version's files, verifying each sha256.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use reqwest::Method;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

use crate::client::{Api, Gateway, expect_ok, failure, split_target};

#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// `tenant/model` (newest ready version), `tenant/model:alias` or `tenant/model@version`.
    pub source: String,
    /// Folder to write the files into (created if missing).
    pub dir: PathBuf,
    #[command(flatten)]
    pub gateway: Gateway,
}

/// The version number a reference names.
async fn version_of(api: &Api, tenant: &str, reference: &str) -> anyhow::Result<(String, String)> {
    if let Some((model, number)) = reference.split_once('@') {
        return Ok((model.to_owned(), number.to_owned()));
    }
    if let Some((model, alias)) = reference.split_once(':') {
        let answer =
            expect_ok(api.request(Method::GET, &["api", "v1", "tenants", tenant, "models", model])?.send().await?)
                .await?;
        let alias = answer["aliases"]
            .as_array()
            .and_then(|all| all.iter().find(|a| a["name"] == alias))
            .with_context(|| format!("{tenant}/{model} has no alias {alias:?}"))?;
        let version =
            alias["version"].as_i64().context("the alias splits traffic over several versions; pull one with @N")?;
        return Ok((model.to_owned(), version.to_string()));
    }
    let ready = api
        .list_all(&["api", "v1", "tenants", tenant, "models", reference, "versions"], &[("status", "ready")])
        .await?;
    let newest = ready
        .last()
        .and_then(|v| v["version"].as_i64())
        .with_context(|| format!("{tenant}/{reference} has no ready version"))?;
    Ok((reference.to_owned(), newest.to_string()))
}

pub async fn pull(args: PullArgs) -> anyhow::Result<()> {
    let api = args.gateway.api()?;
    let (tenant, reference) = split_target(&args.source)?;
    let (model, number) = version_of(&api, tenant, reference).await?;
    let version = expect_ok(
        api.request(Method::GET, &["api", "v1", "tenants", tenant, "models", &model, "versions", &number])?
            .send()
            .await?,
    )
    .await?;
    if version["status"] != "ready" {
        bail!("{tenant}/{model}@{number} is {}, not ready", version["status"]);
    }
    let files = version["files"].as_array().cloned().unwrap_or_default();
    let mut total = 0;
    for file in &files {
        let path = file["path"].as_str().context("a file without a path")?;
        let sha256 = file["sha256"].as_str().context("a file without a digest")?;
        let mut segments = vec!["api", "v1", "tenants", tenant, "models", &model, "versions", &number, "files"];
        segments.extend(path.split('/'));
        let target = safe_join(&args.dir, path)?;
        total += download(&api, &segments, &target, sha256).await.with_context(|| format!("downloading {path}"))?;
        eprintln!("  {path} ({} bytes, sha256 verified)", file["size"]);
    }
    println!("pulled {tenant}/{model}@{number} into {}: {} files, {total} bytes", args.dir.display(), files.len());
    Ok(())
}

/// `dir/path`, refusing any path that would leave `dir` (the registry's own path rule).
fn safe_join(dir: &Path, path: &str) -> anyhow::Result<PathBuf> {
    let path = registry::names::FilePath::parse(path).context("the server sent an unsafe file path")?;
    Ok(path.as_str().split('/').fold(dir.to_path_buf(), |p, seg| p.join(seg)))
}

/// Streams one file to `target` through a partial file, checking its sha256 before renaming.
async fn download(api: &Api, segments: &[&str], target: &Path, sha256: &str) -> anyhow::Result<u64> {
    let response = api.request(Method::GET, segments)?.send().await?;
    if !response.status().is_success() {
        return Err(failure(response).await);
    }
    if let Some(parent) = target.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    let partial = target.with_extension("partial");
    let mut out = tokio::fs::File::create(&partial).await?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        hasher.update(&chunk);
        size += chunk.len() as u64;
        out.write_all(&chunk).await?;
    }
    out.flush().await?;
    let actual = hex::encode(hasher.finalize());
    if actual != sha256 {
        let _ = tokio::fs::remove_file(&partial).await;
        bail!("sha256 mismatch: expected {sha256}, got {actual}");
    }
    tokio::fs::rename(&partial, target).await?;
    Ok(size)
}
