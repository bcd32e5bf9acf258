//! `modelgate push DIR TENANT/MODEL`: uploads every file of a folder into a draft version and
//! commits it. Re-running after an interruption continues the newest draft: files already
//! there with the same sha256 are skipped, and a big file's resumable session (the gateway
//! lists a draft's live sessions) picks up at the chunks the server lacks. Small files go up
//! in one PUT each, big ones in parallel chunks.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

use crate::client::{Api, Gateway, expect_ok, split_target};

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
    /// A description for the model (when created) and the version.
    #[arg(long, default_value = "")]
    pub description: String,
    /// Start a new version even if an unfinished draft exists.
    #[arg(long)]
    pub new_version: bool,
    /// Files and chunks sent at the same time.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Files larger than this go up in resumable chunks.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub chunked_above: u64,
    /// Size of those chunks (5 MiB to 64 MiB).
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub chunk_size: u64,
}

struct Push<'a> {
    api: Api,
    args: &'a PushArgs,
    tenant: &'a str,
    model: &'a str,
    number: String,
    progress: MultiProgress,
}

pub async fn push(args: PushArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let (tenant, model) = split_target(&args.target)?;
    let api = args.gateway.api()?;
    let files = collect_files(&args.dir)?;
    if files.is_empty() {
        bail!("{} holds no files", args.dir.display());
    }
    let response = api.request(Method::GET, &["api", "v1", "tenants", tenant, "models", model])?.send().await?;
    if response.status() == StatusCode::NOT_FOUND {
        let body = json!({ "name": model, "task": args.task, "description": args.description });
        expect_ok(api.request(Method::POST, &["api", "v1", "tenants", tenant, "models"])?.json(&body).send().await?)
            .await?;
        eprintln!("created model {tenant}/{model}");
    } else {
        expect_ok(response).await?;
    }

    let versions = ["api", "v1", "tenants", tenant, "models", model, "versions"];
    let draft = if args.new_version { None } else { api.list_all(&versions, &[("status", "draft")]).await?.pop() };
    let version = match draft {
        Some(draft) => {
            eprintln!("continuing draft {tenant}/{model}@{}", draft["version"]);
            draft
        }
        None => {
            let body = json!({ "description": args.description });
            expect_ok(api.request(Method::POST, &versions)?.json(&body).send().await?).await?
        }
    };
    let number = version["version"].as_i64().context("the gateway answered no version number")?.to_string();
    let uploaded: Vec<(String, String)> = version["files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| Some((f["path"].as_str()?.to_owned(), f["sha256"].as_str()?.to_owned())))
        .collect();

    let push = Push { api, args: &args, tenant, model, number, progress: MultiProgress::new() };
    let results: Vec<(u64, bool)> = futures::stream::iter(files.iter())
        .map(|(relative, local)| push.file(relative, local, &uploaded))
        .buffer_unordered(args.parallel.max(1))
        .try_collect()
        .await?;
    let number = &push.number;
    let commit = push
        .api
        .request(Method::POST, &["api", "v1", "tenants", tenant, "models", model, "versions", number, "commit"])?;
    expect_ok(commit.send().await?).await.context("commit refused")?;
    let bytes: u64 = results.iter().map(|(size, _)| size).sum();
    let skipped = results.iter().filter(|(_, sent)| !sent).count();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "pushed {tenant}/{model}@{number}: {} files ({skipped} already there), {bytes} bytes in {secs:.1} s ({:.1} MiB/s)",
        files.len(),
        bytes as f64 / (1024.0 * 1024.0) / secs.max(0.001)
    );
    if let Some(alias) = &args.alias {
        let body = json!({ "version": number.parse::<i64>()? });
        let request =
            push.api.request(Method::PUT, &["api", "v1", "tenants", tenant, "models", model, "aliases", alias])?;
        expect_ok(request.json(&body).send().await?).await?;
        println!("{tenant}/{model}:{alias} -> {number}");
    }
    Ok(())
}

impl Push<'_> {
    fn segments<'s>(&'s self, tail: &[&'s str]) -> Vec<&'s str> {
        let mut segments = vec!["api", "v1", "tenants", self.tenant, "models", self.model, "versions", &self.number];
        segments.extend_from_slice(tail);
        segments
    }

    fn bar(&self, name: &str, size: u64) -> ProgressBar {
        let bar = self.progress.add(ProgressBar::new(size));
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:30!} {bar:30} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {eta:>4}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(name.to_owned());
        bar
    }

    /// Uploads one file unless the draft has it already; answers its size and whether it was sent.
    async fn file(&self, relative: &str, local: &Path, uploaded: &[(String, String)]) -> anyhow::Result<(u64, bool)> {
        let size = tokio::fs::metadata(local).await?.len();
        let digest = sha256_file(local).await?;
        if uploaded.iter().any(|(path, sha)| path == relative && *sha == digest) {
            return Ok((size, false));
        }
        let bar = self.bar(relative, size);
        let result = if size > self.args.chunked_above {
            self.chunked(relative, local, size, &digest, &bar).await
        } else {
            self.single(relative, local, size, &digest, &bar).await
        };
        bar.finish();
        result.with_context(|| format!("uploading {relative}"))?;
        Ok((size, true))
    }

    async fn single(
        &self,
        relative: &str,
        local: &Path,
        size: u64,
        digest: &str,
        bar: &ProgressBar,
    ) -> anyhow::Result<()> {
        let mut tail = vec!["files"];
        tail.extend(relative.split('/'));
        let bar = bar.clone();
        let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::open(local).await?)
            .inspect_ok(move |chunk| bar.inc(chunk.len() as u64));
        let response = self
            .api
            .request(Method::PUT, &self.segments(&tail))?
            .header("x-checksum-sha256", digest)
            .header(reqwest::header::CONTENT_LENGTH, size)
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await?;
        expect_ok(response).await.map(drop)
    }

    /// A resumable session. A live session the draft already has for this file (an interrupted
    /// run's, from any machine) is resumed: only the chunks the gateway lacks are sent.
    async fn chunked(
        &self,
        relative: &str,
        local: &Path,
        size: u64,
        digest: &str,
        bar: &ProgressBar,
    ) -> anyhow::Result<()> {
        let open = self.api.list_all(&self.segments(&["uploads"]), &[]).await?;
        let earlier = open
            .into_iter()
            .find(|s| s["path"] == relative && s["sha256"] == digest && s["size"] == size && s["presigned"] == false);
        let session = match earlier {
            Some(session) => session,
            None => {
                let body =
                    json!({ "path": relative, "size": size, "sha256": digest, "chunk_size": self.args.chunk_size });
                let request = self.api.request(Method::POST, &self.segments(&["uploads"]))?.json(&body);
                let session = expect_ok(request.send().await?).await?;
                if session["status"] == "complete" {
                    // The tenant stores these bytes already: the gateway recorded the file.
                    bar.inc(size);
                    return Ok(());
                }
                session
            }
        };
        let id = session["id"].as_str().context("a session without an id")?.to_owned();
        let chunk_size = session["chunk_size"].as_u64().context("a session without a chunk size")?;
        let chunks = session["chunks"].as_u64().context("a session without a chunk count")?;
        let received: Vec<u64> =
            session["received"].as_array().into_iter().flatten().filter_map(Value::as_u64).collect();
        bar.inc(received.iter().map(|i| chunk_size.min(size - i * chunk_size)).sum());
        if !received.is_empty() {
            let line = format!("resuming {relative}: {} of {chunks} chunks already there", received.len());
            self.progress.suspend(|| eprintln!("{line}"));
        }
        let missing: Vec<u64> = (0..chunks).filter(|i| !received.contains(i)).collect();
        futures::stream::iter(missing)
            .map(|index| {
                let id = id.clone();
                async move {
                    let len = chunk_size.min(size - index * chunk_size);
                    let mut file = tokio::fs::File::open(local).await?;
                    file.seek(std::io::SeekFrom::Start(index * chunk_size)).await?;
                    let mut bytes = vec![0u8; usize::try_from(len)?];
                    file.read_exact(&mut bytes).await?;
                    let index = index.to_string();
                    let request = self.api.request(Method::PUT, &self.segments(&["uploads", &id, "chunks", &index]))?;
                    expect_ok(request.body(bytes).send().await?).await?;
                    bar.inc(len);
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(self.args.parallel.max(1))
            .try_collect::<Vec<()>>()
            .await?;
        let complete = self.api.request(Method::POST, &self.segments(&["uploads", &id, "complete"]))?;
        expect_ok(complete.send().await?).await?;
        Ok(())
    }
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
