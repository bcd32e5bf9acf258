//! The runner's gRPC port answers gateways only: mutual TLS with the certificate the gateway
//! holds. In plaintext, without a client certificate, or with one of another CA, every RPC is
//! refused and the runner does nothing; a gateway that does not trust the runner's CA refuses
//! it too; with the gateway's certificate the same calls work. A spec whose files are not its
//! tenant's stored blobs is refused before anything is fetched, and a corrupt blob's error
//! names no digest, on the runner or through the gateway.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use proto::v1::runner_client::RunnerClient;
use proto::v1::{
    ClassifyRequest, EmbedRequest, GenerateRequest, LoadRequest, ModelFile, ModelSpec, PinRequest, StatusRequest,
    UnloadRequest,
};
use reqwest::Method;
use serde_json::json;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::helpers::{AppOptions, Database, TestApp, gateway_tls};

/// The tenant's id, as the gateway puts it in a spec.
async fn tenant_id(app: &TestApp, tenant: &str) -> String {
    let (status, body) = app.call(Method::GET, "/api/v1/tenants", &app.admin_key, None).await;
    assert_eq!(status, 200, "{body}");
    let found = body["data"].as_array().expect("tenants").iter().find(|t| t["name"] == tenant);
    found.and_then(|t| t["id"].as_str()).expect("a tenant id").to_owned()
}

/// The spec a gateway sends for `tenant/model@1`: every file at its tenant's content address.
async fn spec_of(app: &TestApp, key: &str, tenant: &str, model: &str) -> ModelSpec {
    let tenant_id = tenant_id(app, tenant).await;
    let (status, version) =
        app.call(Method::GET, &format!("/api/v1/tenants/{tenant}/models/{model}/versions/1"), key, None).await;
    assert_eq!(status, 200, "{version}");
    let storage = app.storage();
    let files = version["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| {
            let sha256 = f["sha256"].as_str().expect("a digest").to_owned();
            let digest = registry::names::Digest::parse(&sha256).expect("a digest");
            ModelFile {
                path: f["path"].as_str().expect("a path").to_owned(),
                object_path: storage.blob_path(&tenant_id, &digest).to_string(),
                sha256,
                size: f["size"].as_u64().expect("a size"),
            }
        })
        .collect();
    ModelSpec {
        version_id: format!("runner-auth-{tenant}-{model}"),
        display_name: format!("{tenant}/{model}@1"),
        architecture: String::new(),
        task: "embedding".into(),
        files,
        tenant_id,
    }
}

/// Every RPC of the runner once, with `spec` where one is needed; what each answered.
async fn every_rpc(
    client: &mut RunnerClient<Channel>,
    spec: &ModelSpec,
) -> Vec<(&'static str, Result<(), tonic::Status>)> {
    let model = Some(spec.clone());
    let version_id = spec.version_id.clone();
    let inputs = vec!["hello".to_owned()];
    let mut answers = vec![
        ("Status", client.status(StatusRequest {}).await.map(drop)),
        ("Load", client.load(LoadRequest { model: model.clone(), pin: false }).await.map(drop)),
        ("Pin", client.pin(PinRequest { version_id: version_id.clone(), pinned: true }).await.map(drop)),
        ("Embed", client.embed(EmbedRequest { model: model.clone(), inputs: inputs.clone() }).await.map(drop)),
        ("Classify", client.classify(ClassifyRequest { model: model.clone(), inputs }).await.map(drop)),
    ];
    let generate = GenerateRequest { model, prompt: "hello".into(), max_tokens: 1, ..GenerateRequest::default() };
    let generated = match client.generate(generate).await {
        Ok(stream) => stream.into_inner().next().await.unwrap_or(Ok(Default::default())).map(drop),
        Err(status) => Err(status),
    };
    answers.push(("Generate", generated));
    answers
        .push(("Pin (off)", client.pin(PinRequest { version_id: version_id.clone(), pinned: false }).await.map(drop)));
    answers.push(("Unload", client.unload(UnloadRequest { version_id }).await.map(drop)));
    answers
}

fn lazy(uri: String, tls: Option<ClientTlsConfig>) -> RunnerClient<Channel> {
    let mut endpoint = Endpoint::from_shared(uri).expect("a URI").connect_timeout(Duration::from_secs(5));
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).expect("a TLS config");
    }
    RunnerClient::new(endpoint.connect_lazy())
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).expect("a certificate file")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_runner_answers_only_the_gateways_certificate() {
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let (key, _) = app.acme_with_tiny_model().await;
    let spec = spec_of(&app, &key, "acme", "tiny").await;
    let (addr, tls) = (app.runner_addr(), app.tls_dir());
    let other = tempfile::tempdir().expect("temporary folder");
    let other = modelgate::tls::generated(&other.path().join("tls")).expect("another CA");
    let runner_ca = Certificate::from_pem(read(&tls, "ca.pem"));
    let name = gateway::runners::DEFAULT_SERVER_NAME;

    let refused = [
        ("plaintext", lazy(format!("http://{addr}"), None)),
        (
            "TLS without a client certificate",
            lazy(
                format!("https://{addr}"),
                Some(ClientTlsConfig::new().ca_certificate(runner_ca.clone()).domain_name(name)),
            ),
        ),
        (
            "a client certificate of another CA",
            lazy(
                format!("https://{addr}"),
                Some(
                    ClientTlsConfig::new()
                        .ca_certificate(runner_ca)
                        .identity(Identity::from_pem(
                            &other.gateway.cert,
                            secrecy::ExposeSecret::expose_secret(&other.gateway.key),
                        ))
                        .domain_name(name),
                ),
            ),
        ),
        (
            // The gateway's own certificate, but a CA that did not sign the runner's: the
            // client refuses the runner.
            "a gateway that does not trust the runner's CA",
            lazy(
                format!("https://{addr}"),
                Some(gateway::runners::client_tls_config(
                    &other.gateway.ca,
                    &read(&tls, "gateway.pem"),
                    &read(&tls, "gateway.key"),
                    name,
                )),
            ),
        ),
    ];
    for (who, mut client) in refused {
        for (rpc, answer) in every_rpc(&mut client, &spec).await {
            let status = answer.err().unwrap_or_else(|| panic!("{rpc} answered {who}"));
            // Refused by the transport (the handshake, or the connection the runner closed),
            // never answered by the service.
            let transport = std::error::Error::source(&status).is_some();
            assert!(transport || status.code() == tonic::Code::Unauthenticated, "{rpc} from {who}: {status:?}");
            if rpc == "Status" {
                println!("{who}: {status:?}");
            }
        }
    }

    // None of it reached the model cache or the artifact cache.
    let mut gateway = lazy(format!("https://{addr}"), Some(gateway_tls(&tls)));
    let status = gateway.status(StatusRequest {}).await.expect("the gateway's certificate is accepted").into_inner();
    assert_eq!((status.loads_total, status.loaded.len(), status.cache_misses), (0, 0, 0), "{status:?}");
    assert_eq!(std::fs::read_dir(app.data_dir().join("artifacts/sha256")).expect("cache").count(), 0);

    // With the gateway's certificate every call reaches the runner: the embedding model loads,
    // is pinned, embeds, and refuses only what it cannot do (classify, generate).
    for (rpc, answer) in every_rpc(&mut gateway, &spec).await {
        match (rpc, answer) {
            ("Classify" | "Generate", Err(status)) => {
                assert_eq!(status.code(), tonic::Code::InvalidArgument, "{rpc}: {status:?}")
            }
            (_, answer) => assert!(answer.is_ok(), "{rpc}: {answer:?}"),
        }
    }
    // And the gateway still serves through it.
    let (status, body) = app.embed(&key, "tiny", json!("hello")).await;
    assert_eq!(status, 200, "{body}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn specs_outside_their_tenant_are_refused_before_anything_is_fetched() {
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let (key, _) = app.acme_with_tiny_model().await;
    let good = spec_of(&app, &key, "acme", "tiny").await;
    app.tenant("beta").await;
    let beta = tenant_id(&app, "beta").await;
    let acme = good.tenant_id.clone();
    let storage = app.storage();
    let mut client = app.runner_client().await;

    let tampered = |f: &dyn Fn(&mut ModelSpec)| {
        let mut spec = good.clone();
        f(&mut spec);
        spec
    };
    let first = good.files[0].clone();
    let digest = registry::names::Digest::parse(&first.sha256).expect("a digest");
    let cases = [
        // acme's blobs, claimed for beta: the paths are not beta's.
        ("another tenant's prefix", tampered(&|s| s.tenant_id = beta.clone())),
        // beta's address of the digest, in a spec of acme.
        (
            "a path under another tenant",
            tampered(&|s| s.files[0].object_path = storage.blob_path(&beta, &digest).to_string()),
        ),
        ("a path that is another file's", tampered(&|s| s.files[0].object_path = s.files[1].object_path.clone())),
        ("a digest its path does not address", tampered(&|s| s.files[0].sha256 = s.files[1].sha256.clone())),
        (
            "a path with ..",
            tampered(&|s| {
                s.files[0].object_path =
                    format!("tenants/{acme}/blobs/sha256/../../../{beta}/blobs/sha256/{}", first.sha256)
            }),
        ),
        ("a staging object", tampered(&|s| s.files[0].object_path = format!("tenants/{acme}/staging/upload/data"))),
        ("an upper-case digest", tampered(&|s| s.files[0].sha256 = first.sha256.to_uppercase())),
        ("no tenant", tampered(&|s| s.tenant_id.clear())),
        ("a tenant id with a slash", tampered(&|s| s.tenant_id = format!("{acme}/../{beta}"))),
    ];
    for (what, spec) in &cases {
        let load = client.load(LoadRequest { model: Some(spec.clone()), pin: false }).await.expect_err(what);
        let embed = client
            .embed(EmbedRequest { model: Some(spec.clone()), inputs: vec!["hello".into()] })
            .await
            .expect_err(what);
        for status in [load, embed] {
            assert!(
                matches!(status.code(), tonic::Code::PermissionDenied | tonic::Code::InvalidArgument),
                "{what}: {status:?}"
            );
            assert!(!status.message().contains(&first.sha256), "{what}: the refusal names no digest: {status:?}");
            assert!(!status.message().contains(&beta), "{what}: nor another tenant: {status:?}");
        }
    }
    let status = client.status(StatusRequest {}).await.expect("status").into_inner();
    assert_eq!((status.loads_total, status.cache_misses), (0, 0), "nothing was loaded: {status:?}");
    for folder in ["artifacts/sha256", "artifacts/partial"] {
        let left = std::fs::read_dir(app.data_dir().join(folder)).expect("cache folder").count();
        assert_eq!(left, 0, "nothing was fetched into {folder}");
    }

    // The spec as the registry lays it out loads: the runner's check and the store agree.
    client.load(LoadRequest { model: Some(good.clone()), pin: false }).await.expect("the tenant's own files load");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_blob_answers_without_any_digest() {
    use object_store::ObjectStoreExt as _;
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let (key, dir) = app.acme_with_tiny_model().await;
    let spec = spec_of(&app, &key, "acme", "tiny").await;
    let weights = spec.files.iter().find(|f| f.path == "model.safetensors").expect("weights").clone();
    let corrupt = b"not the weights".to_vec();
    let corrupt_digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&corrupt));
    let location = object_store::path::Path::parse(&weights.object_path).expect("a path");
    app.storage().object_store().put(&location, corrupt.into()).await.expect("the blob overwritten");
    assert!(dir.join("model.safetensors").exists());

    let (status, body) = app.embed(&key, "tiny", json!("hello")).await;
    assert!(status >= 500, "{status}: {body}");
    let text = body.to_string();
    for secret in [&weights.sha256, &corrupt_digest, &weights.object_path, &spec.tenant_id] {
        assert!(!text.contains(secret.as_str()), "the gateway's answer names {secret}: {text}");
    }

    let mut client = app.runner_client().await;
    let error = client
        .embed(EmbedRequest { model: Some(spec.clone()), inputs: vec!["hello".into()] })
        .await
        .expect_err("the corrupt file is refused");
    assert_eq!(error.code(), tonic::Code::DataLoss, "{error:?}");
    for secret in [&weights.sha256, &corrupt_digest, &weights.object_path] {
        assert!(!error.message().contains(secret.as_str()), "the runner's answer names {secret}: {error:?}");
    }
    app.stop().await;
}

/// Not a benchmark: how much the mutual TLS costs, printed. A connection's first call pays the
/// TCP, TLS and HTTP/2 handshakes; later calls reuse the connection, so their cost is the
/// record layer's.
#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_costs_one_handshake_per_connection() {
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let addr = app.runner_addr();
    let tls = gateway_tls(&app.tls_dir());

    // A second runner in this process, plaintext, for comparison.
    let store: std::sync::Arc<dyn object_store::ObjectStore> =
        std::sync::Arc::new(object_store::memory::InMemory::new());
    let cache = tempfile::tempdir().expect("temporary folder");
    let address: runner::BlobAddress = std::sync::Arc::new(|_, _| None);
    let plain = runner::Runner::new(&runner::RunnerConfig::default(), cache.path().to_path_buf(), store, address)
        .expect("a runner");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let plain_addr = listener.local_addr().expect("an address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(plain.serve(listener, None, async move {
        let _ = stopped.await;
    }));

    let mut figures = Vec::new();
    for (name, uri, tls) in
        [("mutual TLS", format!("https://{addr}"), Some(tls)), ("plaintext", format!("http://{plain_addr}"), None)]
    {
        let (mut first, mut calls) = (Vec::new(), Vec::new());
        for _ in 0..20 {
            let mut client = lazy(uri.clone(), tls.clone());
            let started = Instant::now();
            client.status(StatusRequest {}).await.expect("status");
            first.push(started.elapsed());
            for _ in 0..50 {
                let started = Instant::now();
                client.status(StatusRequest {}).await.expect("status");
                calls.push(started.elapsed());
            }
        }
        first.sort();
        calls.sort();
        figures.push((name, first[first.len() / 2], calls[calls.len() / 2]));
    }
    for (name, first, call) in &figures {
        println!(
            "{name}: first call on a new connection {first:?} (median of 20), later calls {call:?} (median of 1000)"
        );
    }
    let _ = stop.send(());
    server.await.expect("the server task").expect("the server");
    app.stop().await;
}
