//! `modelgate models ls`, `versions ls`, `alias set`: the registry from the command line.

use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{Gateway, expect_ok, split_target};

#[derive(Debug, clap::Subcommand)]
pub enum ModelsCommand {
    /// List a tenant's models.
    Ls {
        tenant: String,
        #[command(flatten)]
        gateway: Gateway,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum VersionsCommand {
    /// List a model's versions: `tenant/model`.
    Ls {
        target: String,
        #[command(flatten)]
        gateway: Gateway,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum AliasCommand {
    /// Point an alias at a version: `modelgate alias set acme/minilm production 3`.
    Set {
        target: String,
        alias: String,
        version: i64,
        #[command(flatten)]
        gateway: Gateway,
    },
}

pub async fn models(command: ModelsCommand) -> anyhow::Result<()> {
    let ModelsCommand::Ls { tenant, gateway } = command;
    let models = gateway.api()?.list_all(&["api", "v1", "tenants", &tenant, "models"], &[]).await?;
    let rows: Vec<Vec<String>> =
        models.iter().map(|m| ["name", "task", "tags", "created_at"].iter().map(|f| text(&m[*f])).collect()).collect();
    print_table(&["NAME", "TASK", "TAGS", "CREATED"], &rows);
    Ok(())
}

pub async fn versions(command: VersionsCommand) -> anyhow::Result<()> {
    let VersionsCommand::Ls { target, gateway } = command;
    let (tenant, model) = split_target(&target)?;
    let versions = gateway.api()?.list_all(&["api", "v1", "tenants", tenant, "models", model, "versions"], &[]).await?;
    let rows: Vec<Vec<String>> = versions
        .iter()
        .map(|v| {
            let files = v["files"].as_array().map_or(0, Vec::len);
            let bytes: u64 = v["files"].as_array().map_or(0, |f| f.iter().filter_map(|f| f["size"].as_u64()).sum());
            vec![
                text(&v["version"]),
                text(&v["status"]),
                text(&v["architecture"]),
                files.to_string(),
                bytes.to_string(),
                text(&v["created_at"]),
            ]
        })
        .collect();
    print_table(&["VERSION", "STATUS", "ARCHITECTURE", "FILES", "BYTES", "CREATED"], &rows);
    Ok(())
}

pub async fn alias(command: AliasCommand) -> anyhow::Result<()> {
    let AliasCommand::Set { target, alias, version, gateway } = command;
    let (tenant, model) = split_target(&target)?;
    let request =
        gateway.api()?.request(Method::PUT, &["api", "v1", "tenants", tenant, "models", model, "aliases", &alias])?;
    expect_ok(request.json(&json!({ "version": version })).send().await?).await?;
    println!("{tenant}/{model}:{alias} -> {version}");
    Ok(())
}

/// Prints rows as aligned columns.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].len()).chain([header[i].len()]).max().unwrap_or(0))
        .collect();
    let line = |cells: Vec<&str>| {
        cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ").trim_end().to_owned()
    };
    println!("{}", line(header.to_vec()));
    for row in rows {
        println!("{}", line(row.iter().map(String::as_str).collect()));
    }
}

pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}
