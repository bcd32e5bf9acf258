//! The served OpenAPI document against the running gateway. schemathesis (PyPI) reads
//! `/api/v1/openapi.json` and calls every operation with requests it derives from the
//! document: valid ones, edge cases and invalid ones, as a tenant admin. It checks that no
//! answer is a 5xx and that every answer's status, content type, headers and body are ones the
//! document declares.

use std::process::Command;

use reqwest::Method;
use serde_json::json;

use crate::helpers::{AppOptions, Database, TestApp, service_var};

/// Checks schemathesis runs; each names a way the answers could break the document.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance";

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    let Some(python) = service_var("MODELGATE_TEST_PYTHON", "schemathesis") else { return };
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let admin = app.tenant("fuzzed").await;
    // Named as the document's examples name them, so the examples reach a runner.
    let (embedder, llm) = (app.dir.path().join("minilm"), app.dir.path().join("llama"));
    crate::tiny_bert::write(&embedder);
    crate::tiny_llama::write(&llm);
    app.upload_model(&admin, "fuzzed", "minilm", &embedder).await;
    app.upload_task_model(&admin, "fuzzed", "llama", "generation", &llm).await;
    // An alias keeps the model from being deleted by a generated DELETE halfway through.
    let alias = json!({"version": 1});
    let path = "/api/v1/tenants/fuzzed/models/minilm/aliases/production";
    assert_eq!(app.call(Method::PUT, path, &admin, Some(alias)).await.0, 200);
    // schemathesis learns ids from answers (whoami names the caller's key) and would revoke
    // the key it calls with; `{id}` is pinned to a spare key instead.
    let spare = json!({"name": "spare", "role": "viewer"});
    let (status, spare) = app.call(Method::POST, "/api/v1/tenants/fuzzed/keys", &admin, Some(spare)).await;
    assert_eq!(status, 201, "{spare}");
    let spare = spare["id"].as_str().expect("the key's id").to_owned();

    let response = app.req(Method::GET, "/api/v1/openapi.json", None).send().await.expect("the document");
    assert_eq!(response.status(), 200, "the document is public");
    let document: serde_json::Value = response.json().await.expect("JSON");
    assert!(document["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{}", document["openapi"]);

    // Path parameters naming the caller's tenant and model, so generated calls get past 404.
    let config = app.dir.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            "[auth.openapi.bearer]\nbearer = \"${{MG_KEY}}\"\n\n[parameters]\n\"path.tenant\" = \"fuzzed\"\n\
             \"path.model\" = \"minilm\"\n\"path.id\" = \"{spare}\"\n"
        ),
    )
    .expect("writing the config");
    let url = format!("{}/api/v1/openapi.json", app.base);
    let report = app.dir.path().join("report.xml");
    let args = [
        "-m".to_owned(),
        "schemathesis.cli".to_owned(),
        "--config-file".to_owned(),
        config.display().to_string(),
        "run".to_owned(),
        url,
        "--checks".to_owned(),
        CHECKS.to_owned(),
        "--max-examples".to_owned(),
        "12".to_owned(),
        "--seed".to_owned(),
        "20261127".to_owned(),
        "--phases".to_owned(),
        "examples,coverage,fuzzing".to_owned(),
        // One worker: with two, Hypothesis's lambda descriptions (not thread-safe) have failed
        // a run with "AST constructor recursion depth mismatch", an error of the tool.
        "--workers".to_owned(),
        "1".to_owned(),
        "--no-color".to_owned(),
        "--report".to_owned(),
        "junit".to_owned(),
        "--report-junit-path".to_owned(),
        report.display().to_string(),
    ];
    let dir = app.dir.path().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        // In the test's folder: schemathesis keeps a cache of what it found where it runs.
        Command::new(python).args(args).current_dir(dir).env("MG_KEY", admin).output().expect("schemathesis runs")
    })
    .await
    .expect("joined");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let junit = std::fs::read_to_string(&report).expect("the JUnit report");
    let cases = junit.matches("<testcase").count();
    assert!(cases >= 60, "schemathesis tested {cases} operations; the document has more than 60");
    app.stop().await;
}
