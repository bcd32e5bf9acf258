//! The official client libraries against the gateway, as tenants use them: the `openai`
//! Python SDK (embeddings as floats and as base64, its default; chat completions whole and
//! streamed) and Triton's `tritonclient[http]` (health, metadata, infer with BYTES input).

use std::process::Command;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{AppOptions, Database, TestApp, embedding, max_abs_diff, service_var};
use crate::{tiny_bert, tiny_llama};

const OPENAI: &str = r#"
import json, os, openai
client = openai.OpenAI(base_url=os.environ["BASE"] + "/v1", api_key=os.environ["KEY"], max_retries=0)
texts = ["hello world", "a dog"]
out = {
    "float": [d.embedding for d in client.embeddings.create(model="minilm", input=texts, encoding_format="float").data],
    "default": [d.embedding for d in client.embeddings.create(model="minilm", input=texts).data],
}
messages = [{"role": "user", "content": "hello world"}]
chat = client.chat.completions.create(model="llm", messages=messages, max_tokens=5, temperature=0)
out["chat"] = chat.choices[0].message.content
out["chat_usage"] = chat.usage.completion_tokens
pieces, usage = [], None
for chunk in client.chat.completions.create(model="llm", messages=messages, max_tokens=5, temperature=0,
                                            stream=True, stream_options={"include_usage": True}):
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
    if chunk.usage:
        usage = chunk.usage.completion_tokens
out["streamed"] = "".join(pieces)
out["streamed_usage"] = usage
try:
    client.embeddings.create(model="nope", input="x")
    out["missing"] = "answered"
except openai.NotFoundError as e:
    out["missing"] = e.status_code
print(json.dumps(out))
"#;

const TRITON: &str = r#"
import json, os
import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException
client = httpclient.InferenceServerClient(url=os.environ["HOSTPORT"])
auth = {"Authorization": "Bearer " + os.environ["KEY"]}
out = {"live": client.is_server_live(), "ready": client.is_server_ready()}
out["server"] = client.get_server_metadata()["name"]
meta = client.get_model_metadata("minilm", headers=auth)
out["inputs"] = [i["name"] for i in meta["inputs"]]
out["model_ready"] = client.is_model_ready("minilm", headers=auth)
text = httpclient.InferInput("text", [2], "BYTES")
text.set_data_from_numpy(np.array([b"hello world", b"a dog"], dtype=np.object_), binary_data=False)
wanted = [httpclient.InferRequestedOutput("embedding", binary_data=False)]
result = client.infer("minilm", [text], outputs=wanted, headers=auth)
out["embedding"] = result.as_numpy("embedding").tolist()
try:
    client.infer("nope", [text], outputs=wanted, headers=auth)
    out["missing"] = "answered"
except InferenceServerException as e:
    out["missing"] = e.status()
print(json.dumps(out))
"#;

/// Runs a Python script with the CI's interpreter; answers its last line, parsed.
async fn python(interpreter: String, script: &'static str, env: Vec<(&'static str, String)>) -> Value {
    let output = tokio::task::spawn_blocking(move || {
        Command::new(interpreter).args(["-c", script]).envs(env).output().expect("python runs")
    })
    .await
    .expect("joined");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "the script failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("the script's JSON")
}

async fn app_with_models() -> (TestApp, String) {
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let admin = app.tenant("acme").await;
    let (embedder, llm) = (app.dir.path().join("e"), app.dir.path().join("llm"));
    tiny_bert::write(&embedder);
    tiny_llama::write(&llm);
    app.upload_model(&admin, "acme", "minilm", &embedder).await;
    app.upload_task_model(&admin, "acme", "llm", "generation", &llm).await;
    let key = app.key("acme", "invoker", &admin).await;
    (app, key)
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().expect("an array").iter().map(|x| x.as_f64().expect("a number") as f32).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openai_python_sdk_embeds_and_chats() {
    let Some(interpreter) = service_var("MODELGATE_TEST_PYTHON", "the openai Python SDK") else { return };
    let (app, key) = app_with_models().await;
    let (status, direct) = app.embed(&key, "minilm", json!(["hello world", "a dog"])).await;
    assert_eq!(status, 200);
    let chat = json!({"model": "llm", "messages": [{"role": "user", "content": "hello world"}], "max_tokens": 5, "temperature": 0});
    let (status, answer) = app.call(Method::POST, "/v1/chat/completions", &key, Some(chat)).await;
    assert_eq!(status, 200, "{answer}");

    let out = python(interpreter, OPENAI, vec![("BASE", app.base.clone()), ("KEY", key)]).await;
    for format in ["float", "default"] {
        for i in 0..2 {
            let diff = max_abs_diff(&floats(&out[format][i]), &embedding(&direct, i));
            assert!(diff < 1e-6, "{format} embedding {i} differs by {diff} from the JSON answer");
        }
    }
    let content = answer["choices"][0]["message"]["content"].as_str().expect("content");
    assert_eq!(out["chat"], content);
    assert_eq!(out["streamed"], content, "the streamed deltas add up to the same answer");
    assert_eq!(out["chat_usage"], answer["usage"]["completion_tokens"]);
    assert_eq!(out["streamed_usage"], answer["usage"]["completion_tokens"], "include_usage sends the usage");
    assert_eq!(out["missing"], 404, "an unknown model is the SDK's NotFoundError");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tritons_http_client_checks_health_reads_metadata_and_infers() {
    let Some(interpreter) = service_var("MODELGATE_TEST_PYTHON", "tritonclient[http]") else { return };
    let (app, key) = app_with_models().await;
    let (status, direct) = app.embed(&key, "minilm", json!(["hello world", "a dog"])).await;
    assert_eq!(status, 200);
    let hostport = app.base.trim_start_matches("http://").to_owned();
    let out = python(interpreter, TRITON, vec![("HOSTPORT", hostport), ("KEY", key)]).await;
    assert_eq!(
        (out["live"].clone(), out["ready"].clone(), out["model_ready"].clone()),
        (json!(true), json!(true), json!(true))
    );
    assert_eq!(out["server"], "modelgate");
    assert_eq!(out["inputs"], json!(["text"]));
    for i in 0..2 {
        let diff = max_abs_diff(&floats(&out["embedding"][i]), &embedding(&direct, i));
        assert!(diff < 1e-6, "row {i} differs by {diff} from /v1/embeddings");
    }
    assert_eq!(out["missing"], "404", "an unknown model is an InferenceServerException with status 404: {out}");
    app.stop().await;
}
