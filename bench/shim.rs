//! The least an HTTP front for the runner can do, for `bench/overhead.sh`: one route,
//! `POST /v1/embeddings` with `{"input": "…"}`, turned into the runner's Embed call for a fixed
//! model and answered as JSON. No auth, no limits, no registry: what is left is HTTP + JSON +
//! gRPC, the floor every gateway stands on.
//!
//! Usage: shim write-model DIR
//!        shim serve LISTEN RUNNER_URL STORE_DIR MODEL_DIR TLS_DIR
//! (`serve` copies the model's files into STORE_DIR as tenant `shim`'s blobs, in the runner's
//! object store, and calls the runner over mutual TLS with the gateway's certificate from
//! TLS_DIR, the `tls` folder `modelgate` makes in its data folder.)

#[expect(dead_code, reason = "the tests' tiny BERT module has reference helpers the benchmark does not use")]
#[path = "../tests/e2e/tiny_bert.rs"]
mod tiny_bert;

use std::path::Path;

use actix_web::{App, HttpResponse, HttpServer, post, web};
use proto::v1::runner_client::RunnerClient;
use proto::v1::{EmbedRequest, ModelFile, ModelSpec};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use tonic::transport::Channel;

#[derive(Deserialize)]
struct Body {
    input: String,
}

struct Shim {
    client: RunnerClient<Channel>,
    spec: ModelSpec,
}

#[post("/v1/embeddings")]
async fn embeddings(shim: web::Data<Shim>, body: web::Json<Body>) -> HttpResponse {
    let request = EmbedRequest { model: Some(shim.spec.clone()), inputs: vec![body.into_inner().input] };
    match shim.client.clone().embed(request).await {
        Ok(answer) => {
            let data: Vec<_> = answer
                .into_inner()
                .embeddings
                .into_iter()
                .enumerate()
                .map(|(index, e)| json!({ "object": "embedding", "index": index, "embedding": e.values }))
                .collect();
            HttpResponse::Ok().json(json!({ "object": "list", "data": data }))
        }
        Err(status) => HttpResponse::BadGateway().json(json!({ "error": status.message() })),
    }
}

/// Every file under `model` (relative path, bytes).
fn files(model: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files(model, &path, out)?;
        } else {
            let relative = path.strip_prefix(model).map_err(std::io::Error::other)?.to_string_lossy().into_owned();
            out.push((relative, std::fs::read(&path)?));
        }
    }
    Ok(())
}

fn spec(store: &Path, model: &Path) -> anyhow::Result<ModelSpec> {
    let mut found = Vec::new();
    files(model, model, &mut found)?;
    let blobs = store.join("tenants/shim/blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let mut model_files = Vec::new();
    for (path, bytes) in found {
        let sha256 = hex::encode(Sha256::digest(&bytes));
        std::fs::write(blobs.join(&sha256), &bytes)?;
        model_files.push(ModelFile {
            path,
            sha256: sha256.clone(),
            size: bytes.len() as u64,
            object_path: format!("tenants/shim/blobs/sha256/{sha256}"),
        });
    }
    Ok(ModelSpec {
        version_id: "shim-model".into(),
        display_name: "shim/model@1".into(),
        architecture: "BertModel".into(),
        task: "embedding".into(),
        files: model_files,
        tenant_id: "shim".into(),
    })
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["write-model", dir] => {
            tiny_bert::write(Path::new(dir));
            Ok(())
        }
        ["serve", listen, runner, store, model, tls] => {
            let spec = spec(Path::new(store), Path::new(model))?;
            let read = |name: &str| std::fs::read_to_string(Path::new(tls).join(name));
            let tls = gateway::runners::client_tls_config(
                &read("ca.pem")?,
                &read("gateway.pem")?,
                &read("gateway.key")?,
                gateway::runners::DEFAULT_SERVER_NAME,
            );
            let runner = runner.replacen("http://", "https://", 1);
            let channel = tonic::transport::Endpoint::from_shared(runner)?.tls_config(tls)?.connect().await?;
            let client = RunnerClient::new(channel);
            let shim = web::Data::new(Shim { client, spec });
            HttpServer::new(move || App::new().app_data(shim.clone()).service(embeddings)).bind(*listen)?.run().await?;
            Ok(())
        }
        _ => anyhow::bail!("usage: shim write-model DIR | shim serve LISTEN RUNNER_URL STORE_DIR MODEL_DIR TLS_DIR"),
    }
}
