//! The official `huggingface_hub` client downloads from modelgate's Hub-compatible API.

use std::process::Command;

use serde_json::Value;

use crate::helpers::{AppOptions, Database, TestApp, files_of, service_var};
use crate::tiny_bert;

const SCRIPT: &str = r#"
import json, os, sys
from huggingface_hub import hf_hub_download, snapshot_download
from huggingface_hub.errors import RepositoryNotFoundError, EntryNotFoundError, RevisionNotFoundError
out = {
    "by_alias": hf_hub_download("acme/tiny", "config.json", revision="production"),
    "nested_main": hf_hub_download("acme/tiny", "1_Pooling/config.json"),
    "snapshot": snapshot_download("acme/tiny", revision="2"),
}
def error(call):
    try:
        call()
        return "downloaded"
    except (RepositoryNotFoundError, EntryNotFoundError, RevisionNotFoundError) as e:
        return type(e).__name__
out["other_tenant"] = error(lambda: hf_hub_download("acme/tiny", "config.json", token=os.environ["OTHER_TOKEN"], cache_dir="other-cache"))
out["missing_file"] = error(lambda: hf_hub_download("acme/tiny", "nope.txt"))
out["missing_revision"] = error(lambda: hf_hub_download("acme/tiny", "config.json", revision="staging"))
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread")]
async fn huggingface_hub_downloads_files_and_snapshots() {
    let Some(python) = service_var("MODELGATE_TEST_PYTHON", "huggingface_hub client") else { return };
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let key = app.tenant("acme").await;
    let other = app.tenant("globex").await;
    let dir = app.dir.path().join("tiny");
    tiny_bert::write(&dir);
    app.upload_model(&key, "acme", "tiny", &dir).await;
    app.upload_version_again(&key, "tiny", &dir).await;
    app.set_alias(&key, "acme", "tiny", "production", 1).await;

    let hf_home = app.dir.path().join("hf-home");
    let (endpoint, base) = (format!("{}/hf", app.base), app.dir.path().to_path_buf());
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .args(["-c", SCRIPT])
            .current_dir(base)
            .env("HF_ENDPOINT", endpoint)
            .env("HF_TOKEN", key)
            .env("OTHER_TOKEN", other)
            .env("HF_HOME", hf_home)
            .env("HF_HUB_DISABLE_TELEMETRY", "1")
            .env("HF_HUB_DISABLE_XET", "1")
            .env_remove("HF_HUB_OFFLINE")
            .output()
            .expect("python runs")
    })
    .await
    .expect("joined");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "huggingface_hub failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let out: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("the script's JSON");
    let same = |downloaded: &str, original: &std::path::Path| {
        let got = std::fs::read(downloaded).unwrap_or_else(|e| panic!("{downloaded}: {e}; the script said {out}"));
        got == std::fs::read(original).expect("original file")
    };
    assert!(same(out["by_alias"].as_str().expect("path"), &dir.join("config.json")));
    assert!(same(out["nested_main"].as_str().expect("path"), &dir.join("1_Pooling/config.json")));
    let snapshot = std::path::PathBuf::from(out["snapshot"].as_str().expect("path"));
    for (relative, original) in files_of(&dir) {
        assert!(
            same(&snapshot.join(&relative).display().to_string(), &original),
            "snapshot has {relative} byte-identical"
        );
    }
    assert_eq!(out["other_tenant"], "RepositoryNotFoundError", "another tenant's token sees no repo: {out}");
    assert!(out["missing_file"].as_str().is_some_and(|e| e.ends_with("EntryNotFoundError")), "{out}");
    assert_eq!(out["missing_revision"], "RevisionNotFoundError", "{out}");
    app.stop().await;
}
