//! `modelgate push DIR TENANT/MODEL`: uploads every file of a folder as a new version and commits it.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt as _;

use crate::client::{Gateway, expect_ok, split_target};

#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// Folder whose files make the version (hidden files and folders are skipped).
    pub dir: PathBuf,
    /// Where to push: `tenant/model`.
    pub target: String,
    #[command(flatten)]
    pub gateway: Gateway,
    /// Point this alias at the new version once committed.
    #[arg(long)]
    pub alias: Option<String>,
    /// The model's task, used when the model does not exist yet.
    #[arg(long, default_value = "embedding")]
    pub task: String,
}

pub async fn push(args: PushArgs) -> anyhow::Result<()> {
    let (tenant, model) = split_target(&args.target)?;
    let api = args.gateway.api()?;
    let files = collect_files(&args.dir)?;
    if files.is_empty() {
        bail!("{} holds no files", args.dir.display());
    }

    let response = api.request(Method::GET, &["api", "v1", "tenants", tenant, "models", model])?.send().await?;
    if response.status() == StatusCode::NOT_FOUND {
        let body = json!({ "name": model, "task": args.task });
        expect_ok(api.request(Method::POST, &["api", "v1", "tenants", tenant, "models"])?.json(&body).send().await?)
            .await?;
        eprintln!("created model {tenant}/{model}");
    } else {
        expect_ok(response).await?;
    }

    let version = expect_ok(
        api.request(Method::POST, &["api", "v1", "tenants", tenant, "models", model, "versions"])?.send().await?,
    )
    .await?;
    let number = version["version"].as_i64().context("the gateway answered no version number")?.to_string();
    let mut total: u64 = 0;
    for (relative, local) in &files {
        let digest = sha256_file(local).await?;
        let file = tokio::fs::File::open(local).await?;
        let size = file.metadata().await?.len();
        let mut segments = vec!["api", "v1", "tenants", tenant, "models", model, "versions", &number, "files"];
        segments.extend(relative.split('/'));
        let response = api
            .request(Method::PUT, &segments)?
            .header("x-checksum-sha256", &digest)
            .header(reqwest::header::CONTENT_LENGTH, size)
            .body(reqwest::Body::from(file))
            .send()
            .await?;
        expect_ok(response).await.with_context(|| format!("uploading {relative}"))?;
        total += size;
        eprintln!("  {relative} ({size} bytes, sha256 {})", &digest[..12]);
    }
    let commit = api
        .request(Method::POST, &["api", "v1", "tenants", tenant, "models", model, "versions", &number, "commit"])?
        .send()
        .await?;
    expect_ok(commit).await.context("commit refused")?;
    println!("pushed {tenant}/{model}@{number}: {} files, {total} bytes", files.len());
    if let Some(alias) = &args.alias {
        let body = json!({ "version": number.parse::<i64>()? });
        expect_ok(
            api.request(Method::PUT, &["api", "v1", "tenants", tenant, "models", model, "aliases", alias])?
                .json(&body)
                .send()
                .await?,
        )
        .await?;
        println!("{tenant}/{model}:{alias} -> {number}");
    }
    Ok(())
}

/// Every regular file under `dir`, with its `/`-separated path relative to `dir`, sorted.
fn collect_files(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).with_context(|| format!("reading {}", current.display()))? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                let relative = entry
                    .path()
                    .strip_prefix(dir)?
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                out.push((relative, entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

async fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut file = tokio::fs::File::open(path).await.with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}
