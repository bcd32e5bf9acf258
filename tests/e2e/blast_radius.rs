//! Blast radius: one tenant's hostile uploads and calls against the real binary (`modelgate
//! dev`, gateway and runner in one process) under `prlimit --as=6GiB`, so that a runaway
//! allocation fails inside it rather than on the host. Each attack is refused at commit or
//! answers a 4xx; the process stays up; another tenant's model answers every call throughout;
//! the server's RSS stays under 1.5 GiB.
//!
//! The victim's latency under attack is a speed target, so it is judged by a benchmark, not
//! here: `bench/blast_radius.sh` runs this test alone on an idle machine with
//! `MODELGATE_BENCH_VICTIM_P99_FACTOR=3`, which makes it require the victim's p99 under attack
//! to stay within that factor of its unloaded p99 (docs/PERFORMANCE.md has the figures).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::dev_binary::{BIN, free_port};
use crate::helpers::{AppOptions, Database, TestApp, files_of};
use crate::routing::RunnerProcess;

/// The server's address space: what it may allocate at most.
const ADDRESS_SPACE: u64 = 6 << 30;
/// The gateway's deadline for a generation (`[gateway.routing] generate_timeout_ms`): longer
/// than a cold load and a template's render process (3 s at most) take on a loaded machine,
/// shorter than `SLOW` takes for 4,000 tokens (~14 s on an idle 2-core EPYC).
const GENERATE_TIMEOUT_MS: u64 = 8000;
/// A generator that takes milliseconds a token and never ends early.
const SLOW: crate::tiny_llama::Size =
    crate::tiny_llama::Size { hidden: 768, intermediate: 3072, context: 4096, eos: 9999 };
const VICTIM_CALLS: usize = 200;

struct Server {
    child: Child,
    app: TestApp,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `modelgate dev` under prlimit; None (said why) where prlimit is missing.
    async fn start() -> Option<Server> {
        if Command::new("prlimit").arg("--version").stdout(Stdio::null()).status().is_err() {
            eprintln!("SKIPPED blast radius: prlimit (util-linux) is not installed");
            return None;
        }
        let dir = tempfile::tempdir().expect("temporary folder");
        let port = free_port();
        let child = Command::new("prlimit")
            .arg(format!("--as={ADDRESS_SPACE}"))
            .arg("--")
            .arg(BIN)
            .args(["dev", "--listen", &format!("127.0.0.1:{port}")])
            .current_dir(dir.path())
            .env("RUST_LOG", "warn")
            .env("MODELGATE__METRICS__LISTEN", "127.0.0.1:0")
            .env("MODELGATE__GATEWAY__ROUTING__GENERATE_TIMEOUT_MS", GENERATE_TIMEOUT_MS.to_string())
            .env("MODELGATE__GATEWAY__ROUTING__POLL_MS", "100")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("modelgate starts under prlimit");
        let base = format!("http://127.0.0.1:{port}");
        let key_file = dir.path().join("modelgate-data/admin.key");
        // Held (and so killed on a failed start) before anything is awaited.
        let mut server = Server { child, app: TestApp::attached(base.clone(), String::new()), _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let up = reqwest::get(format!("{base}/healthz")).await.is_ok_and(|r| r.status().is_success());
            if up && let Ok(key) = std::fs::read_to_string(&key_file) {
                server.app.admin_key = key.trim().to_owned();
                return Some(server);
            }
            assert!(Instant::now() < deadline, "modelgate dev did not start within 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn watched(&self) -> Watched {
        Watched { pids: vec![self.child.id()] }
    }
}

/// The processes under prlimit, where the models run.
struct Watched {
    pids: Vec<u32>,
}

impl Watched {
    /// Their resident memory together, in MiB.
    fn rss_mib(&self) -> u64 {
        self.pids
            .iter()
            .map(|pid| {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the process runs");
                let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
                line.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()).expect("a number of kB") / 1024
            })
            .sum()
    }

    /// Every one is alive: neither gone nor a zombie.
    fn assert_up(&self, after: &str) {
        for pid in &self.pids {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit(") ").next().and_then(|rest| rest.chars().next());
            assert!(matches!(state, Some(s) if s != 'Z' && s != 'X'), "process {pid} died after {after}");
        }
    }
}

/// Creates `model` of `task` in tenant mallory, uploads every file of `dir` and commits it.
async fn try_commit(app: &TestApp, key: &str, model: &str, task: &str, dir: &Path) -> (u16, Value) {
    let body = json!({ "name": model, "task": task });
    let (status, answer) = app.call(Method::POST, "/api/v1/tenants/mallory/models", key, Some(body)).await;
    assert_eq!(status, 201, "creating {model}: {answer}");
    let version = app.new_version(key, "mallory", model).await;
    for (relative, local) in files_of(dir) {
        let bytes = std::fs::read(&local).expect("a model file");
        let (status, answer) = app.put_file(key, "mallory", model, version, &relative, bytes, true).await;
        assert_eq!(status, 201, "uploading {relative} of {model}: {answer}");
    }
    app.commit(key, "mallory", model, version).await
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut Value)) {
    let mut value: Value = serde_json::from_slice(&std::fs::read(path).expect("a JSON file")).expect("JSON");
    edit(&mut value);
    std::fs::write(path, value.to_string()).expect("written");
}

/// Rewrites a safetensors file so that its second tensor names the first one's bytes.
fn overlap_tensors(path: &Path) {
    let file = std::fs::read(path).expect("weights");
    let len = u64::from_le_bytes(file[..8].try_into().expect("a length")) as usize;
    let mut header: serde_json::Map<String, Value> = serde_json::from_slice(&file[8..8 + len]).expect("a header");
    let mut same_size: Vec<(String, Value)> = header
        .iter()
        .filter(|(name, t)| *name != "__metadata__" && t["shape"] == json!([32]))
        .map(|(name, t)| (name.clone(), t["data_offsets"].clone()))
        .collect();
    same_size.sort_by_key(|(_, offsets)| offsets[0].as_u64());
    let (first, second) = (same_size[0].1.clone(), same_size[1].0.clone());
    header[&second]["data_offsets"] = first;
    let header = serde_json::to_vec(&header).expect("json");
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header);
    out.extend(&file[8 + len..]);
    std::fs::write(path, out).expect("written");
}

/// A GGUF file whose metadata declares four billion layers over one layer's tensors.
fn gguf_with_billions_of_layers(path: &Path) {
    use candle_core::quantized::{QTensor, gguf_file};
    let tensor = |shape: (usize, usize)| {
        let t = candle_core::Tensor::zeros(shape, candle_core::DType::F32, &candle_core::Device::Cpu).expect("t");
        QTensor::quantize(&t, candle_core::quantized::GgmlDType::F32).expect("tensor")
    };
    let u = gguf_file::Value::U32;
    let metadata = [
        ("general.architecture", gguf_file::Value::String("llama".into())),
        ("llama.block_count", u(4_000_000_000)),
        ("llama.embedding_length", u(32)),
        ("llama.attention.head_count", u(4)),
        ("llama.rope.dimension_count", u(8)),
        ("llama.context_length", u(128)),
    ];
    let (embeddings, query) = (tensor((16, 32)), tensor((32, 32)));
    let tensors = [("token_embd.weight", &embeddings), ("blk.0.attn_q.weight", &query)];
    let mut file = std::fs::File::create(path).expect("gguf");
    let metadata: Vec<(&str, &gguf_file::Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    gguf_file::write(&mut file, &metadata, &tensors).expect("written");
}

/// The victim's calls, on an OS thread and runtime of their own: the attacker's client work
/// in this process (writing models, encoding 15 MB bodies) must not delay them here.
fn victim(app: TestApp, key: String, phase: Arc<AtomicUsize>) -> std::thread::JoinHandle<Vec<(u16, Duration, usize)>> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        runtime.block_on(victim_calls(app, key, phase))
    })
}

/// Answers an embedding call of the victim as long as `phase` is not 0 (and at least
/// `VICTIM_CALLS` times), timing each and noting the attack's phase it ran in.
async fn victim_calls(app: TestApp, key: String, phase: Arc<AtomicUsize>) -> Vec<(u16, Duration, usize)> {
    let mut calls = Vec::new();
    loop {
        let now = phase.load(Ordering::Relaxed);
        if now == 0 && calls.len() >= VICTIM_CALLS {
            return calls;
        }
        let started = Instant::now();
        let (status, _) = app.embed(&key, "calm", json!("the victim keeps working")).await;
        calls.push((status, started.elapsed(), now));
    }
}

fn p99(calls: &[(u16, Duration, usize)]) -> Duration {
    let mut times: Vec<Duration> = calls.iter().map(|(_, d, _)| *d).collect();
    times.sort();
    times[(times.len() * 99 / 100).min(times.len() - 1)]
}

/// The loaded copies of a model on the runners, and the requests they hold.
async fn in_flight(app: &TestApp, model: &str) -> u64 {
    let (status, body) = app.call(Method::GET, "/api/v1/admin/runners", &app.admin_key, None).await;
    assert_eq!(status, 200, "{body}");
    let runners = body["data"].as_array().cloned().unwrap_or_default();
    runners
        .iter()
        .flat_map(|r| r["models"].as_array().cloned().unwrap_or_default())
        .filter(|m| m["name"].as_str().is_some_and(|n| n.contains(model)))
        .map(|m| m["in_flight"].as_u64().unwrap_or(0))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_tenant_cannot_crash_starve_or_reach_another() {
    let Some(server) = Server::start().await else { return };
    attack(&server.app, &server.watched()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_tenant_cannot_crash_either_of_two_runners() {
    if Command::new("prlimit").arg("--version").stdout(Stdio::null()).status().is_err() {
        eprintln!("SKIPPED blast radius on two runners: prlimit (util-linux) is not installed");
        return;
    }
    let store = tempfile::tempdir().expect("temporary folder");
    let storage_url = url::Url::from_directory_path(store.path()).expect("a file URL").to_string();
    let mut runners = Vec::new();
    for _ in 0..2 {
        runners.push(RunnerProcess::start_limited(&storage_url, 1 << 30, Some(ADDRESS_SPACE)).await);
    }
    let mut options = AppOptions::new(Database::Sqlite);
    options.storage_url = Some(storage_url);
    options.runners = Some(runners.iter().map(RunnerProcess::address).collect());
    let mut app = TestApp::spawn(options).await;
    app.config_mut().gateway.routing.generate_timeout_ms = GENERATE_TIMEOUT_MS;
    app.restart().await;
    attack(&app, &Watched { pids: runners.iter().map(RunnerProcess::pid).collect() }).await;
    app.stop().await;
}

/// Every attack, while another tenant's model is called throughout; `watched` are the
/// processes the models run in.
async fn attack(app: &TestApp, watched: &Watched) {
    let models = app.dir.path().to_path_buf();

    // The victim: another tenant's embedding model, its unloaded latency measured first.
    let victim_key = app.tenant("victim").await;
    crate::tiny_bert::write(&models.join("calm"));
    app.upload_model(&victim_key, "victim", "calm", &models.join("calm")).await;
    assert_eq!(app.embed(&victim_key, "calm", json!("warm up")).await.0, 200);
    let attached = || TestApp::attached(app.base.clone(), app.admin_key.clone());
    let unloaded = victim(attached(), victim_key.clone(), Arc::new(AtomicUsize::new(0)));
    let unloaded = tokio::task::spawn_blocking(move || unloaded.join()).await.expect("joined").expect("the calls");
    let unloaded_p99 = p99(&unloaded);
    // The attack's phase: 1 uploads, 2 template bombs, 3 huge inputs, 4 long generations.
    let phase = Arc::new(AtomicUsize::new(1));
    let during = victim(attached(), victim_key.clone(), phase.clone());

    let mallory = app.tenant("mallory").await;
    let refused = |(status, body): (u16, Value), needle: &str, what: &str| {
        assert_eq!(status, 422, "{what} must be refused at commit: {body}");
        assert!(body.to_string().contains(needle), "{what}: the refusal names the problem ({needle}): {body}");
    };

    // Sizes a config declares and its weights do not confirm.
    let dir = models.join("qwen-layers");
    crate::tiny_llama::write_qwen2(&dir);
    edit_json(&dir.join("config.json"), |c| c["num_hidden_layers"] = json!(1_000_000_000));
    refused(try_commit(app, &mallory, "qwen-layers", "generation", &dir).await, "1000000000", "a billion layers");

    let dir = models.join("llama-positions");
    crate::tiny_llama::write(&dir);
    edit_json(&dir.join("config.json"), |c| c["max_position_embeddings"] = json!(400_000_000));
    refused(try_commit(app, &mallory, "llama-positions", "generation", &dir).await, "400000000", "400M positions");

    let dir = models.join("bert-layers");
    crate::tiny_bert::write(&dir);
    edit_json(&dir.join("config.json"), |c| c["num_hidden_layers"] = json!(1_000_000_000));
    refused(try_commit(app, &mallory, "bert-layers", "embedding", &dir).await, "num_hidden_layers", "BERT layers");

    let dir = models.join("lstm-length");
    crate::lstm::write(&dir);
    edit_json(&dir.join("config.json"), |c| c["max_length"] = json!(1_000_000_000));
    refused(try_commit(app, &mallory, "lstm-length", "classification", &dir).await, "max_length", "an LSTM length");

    let dir = models.join("gguf-layers");
    crate::tiny_llama::write(&dir);
    std::fs::remove_file(dir.join("model.safetensors")).expect("removed");
    gguf_with_billions_of_layers(&dir.join("model.gguf"));
    refused(try_commit(app, &mallory, "gguf-layers", "generation", &dir).await, "4000000000", "GGUF layers");

    // A tokenizer that grows every `a` into a million bytes, and weights sharing bytes.
    let dir = models.join("tokenizer-bomb");
    crate::tiny_bert::write(&dir);
    edit_json(&dir.join("tokenizer.json"), |t| {
        t["normalizer"] = json!({"type": "Replace", "pattern": {"String": "a"}, "content": "x".repeat(1_000_000)})
    });
    refused(try_commit(app, &mallory, "tokenizer-bomb", "embedding", &dir).await, "longer", "a tokenizer bomb");

    let dir = models.join("overlap");
    crate::tiny_bert::write(&dir);
    overlap_tensors(&dir.join("model.safetensors"));
    refused(try_commit(app, &mallory, "overlap", "embedding", &dir).await, "share bytes", "overlapping tensors");
    watched.assert_up("the uploads");

    phase.store(2, Ordering::Relaxed);
    // Chat templates that write, allocate or compute without end: each render ends in its own
    // limited process, and the call answers 400.
    let bombs = [
        ("output", "{% set s = 'x' * 100000000 %}{% for i in range(100000) %}{{ s }}{% endfor %}"),
        (
            "memory",
            "{% set s = 'x' * 100000000 %}{% set s = s ~ s %}{% set s = s ~ s %}{% set s = s ~ s %}\
             {% set s = s ~ s %}{% set s = s ~ s %}{% set s = s ~ s %}{{ s|length }}",
        ),
        ("cpu", "{% for i in range(1000000) %}{% set t = ('x' * 50000000)|upper %}{% endfor %}"),
    ];
    for (name, template) in bombs {
        let model = format!("template-{name}");
        let dir = models.join(&model);
        crate::tiny_llama::write(&dir);
        edit_json(&dir.join("tokenizer_config.json"), |c| c["chat_template"] = json!(template));
        assert_eq!(try_commit(app, &mallory, &model, "generation", &dir).await.0, 200);
        let started = Instant::now();
        let body = json!({"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4});
        let (status, answer) = app.call(Method::POST, "/v1/chat/completions", &mallory, Some(body)).await;
        assert_eq!(status, 400, "the {name} template bomb answers 400: {answer}");
        assert!(
            started.elapsed() < Duration::from_millis(GENERATE_TIMEOUT_MS),
            "the {name} bomb ended within its limits"
        );
        watched.assert_up(&format!("the {name} template bomb"));
    }

    phase.store(3, Ordering::Relaxed);
    // A 15 MB input is read up to what the model takes, not tokenized whole.
    let dir = models.join("mine");
    crate::tiny_bert::write(&dir);
    assert_eq!(try_commit(app, &mallory, "mine", "embedding", &dir).await.0, 200);
    assert_eq!(app.embed(&mallory, "mine", json!("warm up")).await.0, 200);
    let before = watched.rss_mib();
    let huge = "a ".repeat(7_500_000);
    let calls = (0..4).map(|_| app.embed(&mallory, "mine", json!(huge.clone())));
    for (status, answer) in futures::future::join_all(calls).await {
        assert_eq!(status, 200, "a 15 MB input is truncated: {answer}");
    }
    let grown = watched.rss_mib().saturating_sub(before);
    assert!(grown < 256, "four 15 MB inputs at once grew the server by {grown} MiB");

    phase.store(4, Ordering::Relaxed);
    // A generation that runs past its deadline answers 504 there, and the runner lets go of it.
    let dir = models.join("long");
    crate::tiny_llama::write_sized(&dir, SLOW);
    assert_eq!(try_commit(app, &mallory, "long", "generation", &dir).await.0, 200);
    let long = json!({"model": "long", "prompt": "the", "max_tokens": 4000, "temperature": 0});
    let started = Instant::now();
    let (status, answer) = app.call(Method::POST, "/v1/completions", &mallory, Some(long.clone())).await;
    assert_eq!(status, 504, "a stuck generation answers 504 at its deadline: {answer}");
    assert!(started.elapsed() < Duration::from_millis(GENERATE_TIMEOUT_MS + 2000), "{:?}", started.elapsed());
    let idle_by = Instant::now() + Duration::from_secs(1);
    while in_flight(app, "long").await > 0 {
        assert!(Instant::now() < idle_by, "the runner still holds the generation a second after its deadline");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A client that leaves a non-streamed generation ends it too.
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().expect("client");
    let left = impatient.post(format!("{}/v1/completions", app.base)).bearer_auth(&mallory).json(&long).send().await;
    assert!(left.is_err(), "the client gave up");
    let idle_by = Instant::now() + Duration::from_millis(1000);
    while in_flight(app, "long").await > 0 {
        assert!(Instant::now() < idle_by, "the runner still generates for a client that left");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    phase.store(0, Ordering::Relaxed);
    let during = tokio::task::spawn_blocking(move || during.join()).await.expect("joined").expect("the victim's calls");
    watched.assert_up("the attacks");
    let failed: Vec<_> = during.iter().filter(|(s, ..)| *s != 200).collect();
    assert!(failed.is_empty(), "the victim's calls failed during the attacks: {failed:?}");
    let loaded_p99 = p99(&during);
    let by_phase: Vec<String> = (1..=4)
        .map(|n| {
            let calls: Vec<_> = during.iter().filter(|c| c.2 == n).copied().collect();
            if calls.is_empty() {
                format!("{n}: none")
            } else {
                format!("{n}: {} calls, p99 {:?}", calls.len(), p99(&calls))
            }
        })
        .collect();
    eprintln!(
        "blast radius: victim p99 {unloaded_p99:?} unloaded, {loaded_p99:?} over {} calls under attack ({}); RSS {} MiB",
        during.len(),
        by_phase.join("; "),
        watched.rss_mib()
    );
    if let Some(factor) = std::env::var("MODELGATE_BENCH_VICTIM_P99_FACTOR").ok().and_then(|f| f.parse::<u32>().ok()) {
        assert!(
            loaded_p99 <= unloaded_p99 * factor,
            "the victim's p99 went from {unloaded_p99:?} to {loaded_p99:?} under attack (more than {factor}×)"
        );
    }
    assert!(watched.rss_mib() < 1536, "the server holds {} MiB after the suite", watched.rss_mib());
}
