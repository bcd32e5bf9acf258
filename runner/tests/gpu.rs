//! The runner on a CUDA GPU: half precision, the device memory a model is weighed by, the
//! budget over it, and generation. Built only with `--features cuda`; `bench/gpu.sh` runs it
//! on a GPU machine. Without a GPU each test says so and passes, unless
//! `MODELGATE_TEST_REQUIRE_GPU` is set (as bench/gpu.sh sets it), where it fails.
//!
//! Models are written by the tests with candle: a BERT shaped like all-MiniLM-L6-v2 (6 layers,
//! width 384, 30,522 words; about 90 MB in f32) and a small Llama. References are computed with
//! candle's own models in f32 on the CPU.
#![cfg(feature = "cuda")]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, IndexOp as _, Tensor};
use candle_nn::{VarBuilder, VarMap};
use futures::StreamExt as _;
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt as _};
use proto::v1::runner_server::Runner as _;
use proto::v1::{EmbedRequest, GenerateRequest, ModelFile, ModelSpec, StatusRequest, StatusResponse, UnloadRequest};
use runner::{GpuDtype, Runner, RunnerConfig};
use serde_json::{Value, json};
use sha2::Digest as _;
use tonic::Request;

const MIB: u64 = 1024 * 1024;

/// The GPU's CUDA device, or None (after saying why) where there is none and none is required.
fn gpu() -> Option<candle_core::CudaDevice> {
    match Device::cuda_if_available(0) {
        Ok(Device::Cuda(cuda)) => Some(cuda),
        other => {
            let why = format!("no CUDA GPU ({other:?})");
            assert!(
                std::env::var_os("MODELGATE_TEST_REQUIRE_GPU").is_none(),
                "{why}, and MODELGATE_TEST_REQUIRE_GPU is set"
            );
            eprintln!("skipped: {why}");
            None
        }
    }
}

/// Free device memory once the device is idle (the memory pool has then given freed memory back).
fn free_memory(cuda: &candle_core::CudaDevice) -> u64 {
    let stream = cuda.cuda_stream();
    let context = stream.context();
    context.synchronize().expect("device synchronizes");
    context.mem_get_info().expect("memory info").0 as u64
}

/// Random weights for every tensor `build` asks for, saved as `dir/model.safetensors`.
fn save_random(dir: &Path, build: impl FnOnce(VarBuilder)) {
    let varmap = VarMap::new();
    build(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu));
    varmap.save(dir.join("model.safetensors")).expect("saving the weights");
}

fn write_json(dir: &Path, name: &str, value: &Value) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().expect("a parent folder")).expect("model folder");
    std::fs::write(path, serde_json::to_vec(value).expect("json")).expect("writing");
}

/// A word-level tokenizer over `w0 … w{n-1}` after `special`, adding `[CLS]` and `[SEP]` when
/// `bert` is set.
fn word_tokenizer(special: &[&str], words: usize, bert: bool) -> Value {
    let mut vocab = serde_json::Map::new();
    for (i, s) in special.iter().enumerate() {
        vocab.insert((*s).to_owned(), json!(i));
    }
    for i in special.len()..words {
        vocab.insert(format!("w{i}"), json!(i));
    }
    let post = if bert {
        json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}
            }
        })
    } else {
        Value::Null
    };
    json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
        "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": post, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": special[1]}
    })
}

const BERT_WORDS: usize = 30_522;

/// A BERT shaped like all-MiniLM-L6-v2, with random weights, as a sentence-transformers folder.
fn write_minilm_shaped(dir: &Path) -> candle_transformers::models::bert::Config {
    let config = json!({
        "model_type": "bert", "architectures": ["BertModel"], "vocab_size": BERT_WORDS, "hidden_size": 384,
        "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "max_position_embeddings": 512,
        "type_vocab_size": 2, "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0,
        "torch_dtype": "float32"
    });
    let parsed: candle_transformers::models::bert::Config =
        serde_json::from_value(config.clone()).expect("a valid BERT config");
    std::fs::create_dir_all(dir).expect("model folder");
    save_random(dir, |vb| {
        candle_transformers::models::bert::BertModel::load(vb, &parsed).expect("random weights");
    });
    write_json(dir, "config.json", &config);
    write_json(dir, "tokenizer.json", &word_tokenizer(&["[PAD]", "[UNK]", "[CLS]", "[SEP]"], BERT_WORDS, true));
    write_json(
        dir,
        "modules.json",
        &json!([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
        ]),
    );
    write_json(dir, "1_Pooling/config.json", &json!({"pooling_mode_mean_tokens": true}));
    parsed
}

const LLAMA_WORDS: usize = 4_000;

/// A small Llama (4 layers, width 256) with random weights and a word-level tokenizer; its
/// end-of-sequence id is outside the vocabulary, so every generation runs to max_tokens.
fn write_llama(dir: &Path) -> candle_transformers::models::llama::Config {
    let config = json!({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 256,
        "intermediate_size": 704, "vocab_size": LLAMA_WORDS, "num_hidden_layers": 4, "num_attention_heads": 8,
        "num_key_value_heads": 4, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 512,
        "bos_token_id": 1, "eos_token_id": LLAMA_WORDS + 1, "tie_word_embeddings": false
    });
    let parsed: candle_transformers::models::llama::LlamaConfig =
        serde_json::from_value(config.clone()).expect("a valid Llama config");
    let parsed = parsed.into_config(false);
    std::fs::create_dir_all(dir).expect("model folder");
    save_random(dir, |vb| {
        candle_transformers::models::llama::Llama::load(vb, &parsed).expect("random weights");
    });
    write_json(dir, "config.json", &config);
    write_json(dir, "tokenizer.json", &word_tokenizer(&["<pad>", "<unk>"], LLAMA_WORDS, false));
    parsed
}

/// Puts every file of `dir` into `store` and answers the spec that names them.
async fn publish(store: &Arc<dyn ObjectStore>, dir: &Path, name: &str, task: &str) -> ModelSpec {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder).expect("model folder") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).expect("model file");
            let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
            let object_path = format!("tenants/gpu/blobs/sha256/{sha256}");
            let size = bytes.len() as u64;
            store.put(&object_store::path::Path::from(object_path.as_str()), bytes.into()).await.expect("stored");
            let path = path.strip_prefix(dir).expect("inside the folder").to_string_lossy().into_owned();
            files.push(ModelFile { path, sha256, size, object_path });
        }
    }
    ModelSpec {
        version_id: format!("{name}-version"),
        display_name: format!("gpu/{name}@1"),
        architecture: String::new(),
        task: task.to_owned(),
        files,
        tenant_id: "gpu".into(),
    }
}

fn start_runner(store: &Arc<dyn ObjectStore>, cache: &Path, budget: u64, gpu_dtype: GpuDtype) -> Runner {
    let config = RunnerConfig { memory_budget_bytes: Some(budget), gpu_dtype, ..RunnerConfig::default() };
    // The registry's layout of tenants' blobs, as `publish` wrote them.
    let address: runner::BlobAddress =
        Arc::new(|tenant, sha256| Some(format!("tenants/{tenant}/blobs/sha256/{sha256}")));
    Runner::new(&config, cache.to_path_buf(), store.clone(), address).expect("runner starts")
}

async fn embed(runner: &Runner, spec: &ModelSpec, inputs: &[String]) -> Vec<Vec<f32>> {
    let request = EmbedRequest { model: Some(spec.clone()), inputs: inputs.to_vec() };
    let answer = runner.embed(Request::new(request)).await.expect("embedding answers").into_inner();
    answer.embeddings.into_iter().map(|e| e.values).collect()
}

async fn status(runner: &Runner) -> StatusResponse {
    runner.status(Request::new(StatusRequest {})).await.expect("status answers").into_inner()
}

fn memory_of(status: &StatusResponse, spec: &ModelSpec) -> u64 {
    status.loaded.iter().find(|m| m.version_id == spec.version_id).expect("the model is loaded").memory_bytes
}

/// Bytes of the tensors in `dir/model.safetensors` once stored as `bytes_per_value`.
fn tensor_bytes(dir: &Path, bytes_per_value: u64) -> u64 {
    let tensors = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).expect("weights");
    tensors.values().map(|t| t.elem_count() as u64 * bytes_per_value).sum()
}

/// Sentences of 3 to 60 words of the tokenizer's vocabulary.
fn sentences(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let words = 3 + (i * 7) % 58;
            (0..words).map(|j| format!("w{}", 4 + (i * 131 + j * 977) % (BERT_WORDS - 4))).collect::<Vec<_>>().join(" ")
        })
        .collect()
}

/// candle's own BERT in f32 on the CPU, one sentence at a time: mean pooling, L2 norm.
fn reference_embedding(dir: &Path, config: &candle_transformers::models::bert::Config, text: &str) -> Vec<f32> {
    let tensors = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).expect("weights");
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    let model = candle_transformers::models::bert::BertModel::load(vb, config).expect("model");
    let tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).expect("tokenizer");
    let ids = tokenizer.encode(text, true).expect("tokenizes").get_ids().to_vec();
    let ids = Tensor::new(ids.as_slice(), &Device::Cpu).and_then(|t| t.unsqueeze(0)).expect("ids");
    let hidden = model.forward(&ids, &ids.zeros_like().expect("zeros"), None).expect("forward");
    let mean: Vec<f32> = hidden.mean(1).and_then(|t| t.squeeze(0)).and_then(|t| t.to_vec1()).expect("vector");
    let norm = mean.iter().map(|x| x * x).sum::<f32>().sqrt();
    mean.into_iter().map(|x| x / norm).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn f16_embeddings_on_the_gpu_match_f32_on_the_cpu_and_take_half_the_memory() {
    let Some(cuda) = gpu() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let model = dir.path().join("minilm");
    let config = write_minilm_shaped(&model);
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let spec = publish(&store, &model, "minilm", "embedding").await;
    let runner = start_runner(&store, &dir.path().join("cache"), 4096 * MIB, GpuDtype::Auto);

    let before = free_memory(&cuda);
    let inputs = sentences(48);
    let embedded = embed(&runner, &spec, &inputs).await;
    let after = free_memory(&cuda);

    // Half precision against f32: each embedding within 2e-3 of the reference in every
    // component, and a cosine similarity of at least 0.9995.
    for (text, got) in inputs.iter().zip(&embedded).step_by(6) {
        let want = reference_embedding(&model, &config, text);
        let cosine: f32 = got.iter().zip(&want).map(|(a, b)| a * b).sum();
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(cosine > 0.9995 && worst < 2e-3, "{text:?}: cosine {cosine}, largest difference {worst}");
    }

    // The cost is the device memory the load took: at least the f16 tensors, well under
    // the f32 ones, and no more than the process took for the whole first request.
    let cost = memory_of(&status(&runner).await, &spec);
    let (f16_bytes, f32_bytes) = (tensor_bytes(&model, 2), tensor_bytes(&model, 4));
    let taken = before.saturating_sub(after);
    eprintln!(
        "f16 MiniLM-shaped: cost {:.1} MiB; tensors {:.1} MiB in f16, {:.1} MiB in f32; first request took {:.1} MiB",
        cost as f64 / MIB as f64,
        f16_bytes as f64 / MIB as f64,
        f32_bytes as f64 / MIB as f64,
        taken as f64 / MIB as f64
    );
    assert!(cost >= f16_bytes, "cost {cost} is below the f16 tensors' {f16_bytes} bytes");
    assert!(cost < f32_bytes * 3 / 4, "cost {cost}: the weights are not in half precision");
    assert!(cost <= taken, "cost {cost} is more than the whole first request took ({taken} bytes)");

    // Unloading gives it back.
    let unloaded = runner.unload(Request::new(UnloadRequest { version_id: spec.version_id.clone() })).await;
    assert!(unloaded.expect("unload answers").into_inner().unloaded);
    let deadline = Instant::now() + Duration::from_secs(10);
    while free_memory(&cuda) + cost / 10 < after + cost {
        assert!(Instant::now() < deadline, "the unloaded model's device memory did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn round_robin_over_three_models_stays_within_a_device_budget_that_fits_two() {
    let Some(cuda) = gpu() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let mut specs = Vec::new();
    for name in ["a", "b", "c"] {
        let model = dir.path().join(name);
        write_minilm_shaped(&model);
        specs.push(publish(&store, &model, name, "embedding").await);
    }
    // One model's measured cost, from a runner of its own, gone before the test proper.
    let baseline = free_memory(&cuda);
    let cost = {
        let probe = start_runner(&store, &dir.path().join("probe-cache"), 4096 * MIB, GpuDtype::Auto);
        embed(&probe, &specs[0], &sentences(1)).await;
        memory_of(&status(&probe).await, &specs[0])
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while free_memory(&cuda) + cost / 2 < baseline {
        assert!(Instant::now() < deadline, "the probe runner's model did not give its memory back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let budget = cost * 5 / 2;
    let runner = start_runner(&store, &dir.path().join("cache"), budget, GpuDtype::Auto);
    let inputs = sentences(8);
    let mut lowest = baseline;
    for round in 0..3 {
        for spec in &specs {
            let embedded = embed(&runner, spec, &inputs).await;
            assert_eq!(embedded.len(), inputs.len(), "round {round}, {}", spec.display_name);
            let now = status(&runner).await;
            assert!(now.memory_used_bytes <= budget, "{} bytes used over a budget of {budget}", now.memory_used_bytes);
            lowest = lowest.min(free_memory(&cuda));
        }
    }
    let end = status(&runner).await;
    assert!(end.cache_evictions >= 4, "round robin over three models in room for two evicts: {end:?}");
    assert_eq!(end.loaded.len(), 2);
    // The device held no more than the budget, plus scratch memory for a batch and the
    // libraries' workspaces.
    let held = baseline.saturating_sub(lowest);
    eprintln!(
        "budget {:.1} MiB ({:.1} MiB a model): the device held at most {:.1} MiB more than before",
        budget as f64 / MIB as f64,
        cost as f64 / MIB as f64,
        held as f64 / MIB as f64
    );
    assert!(held <= budget + 256 * MIB, "the device held {held} bytes for a budget of {budget}");
}

async fn generate(runner: &Runner, spec: &ModelSpec, temperature: f32, seed: u64) -> (String, u32) {
    let request = GenerateRequest {
        model: Some(spec.clone()),
        prompt: "w11 w22 w33 w44 w55".to_owned(),
        max_tokens: 12,
        temperature: Some(temperature),
        seed: Some(seed),
        ..GenerateRequest::default()
    };
    let mut stream = runner.generate(Request::new(request)).await.expect("generation starts").into_inner();
    let (mut text, mut tokens) = (String::new(), 0);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("a chunk");
        text.push_str(&chunk.text);
        tokens = chunk.completion_tokens;
    }
    (text, tokens)
}

/// Greedy generation with candle's Llama in f32 on the CPU, recomputing the whole sequence
/// at every step (no KV cache).
fn reference_greedy(dir: &Path, config: &candle_transformers::models::llama::Config, steps: usize) -> String {
    use candle_transformers::models::llama::{Cache, Llama};
    let tensors = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).expect("weights");
    let model = Llama::load(VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu), config).expect("model");
    let mut ids: Vec<u32> = [11, 22, 33, 44, 55].to_vec();
    let prompt = ids.len();
    for _ in 0..steps {
        let mut cache = Cache::new(false, DType::F32, config, &Device::Cpu).expect("cache");
        let input = Tensor::new(ids.as_slice(), &Device::Cpu).and_then(|t| t.unsqueeze(0)).expect("ids");
        let logits = model.forward(&input, 0, &mut cache).and_then(|l| l.i(0)).expect("forward");
        ids.push(logits.argmax(0).and_then(|t| t.to_scalar::<u32>()).expect("argmax"));
    }
    let word = |id: u32| match id {
        0 => "<pad>".to_owned(),
        1 => "<unk>".to_owned(),
        id => format!("w{id}"),
    };
    ids[prompt..].iter().map(|&id| word(id)).collect::<Vec<_>>().join(" ")
}

#[tokio::test(flavor = "multi_thread")]
async fn generation_on_the_gpu_follows_the_cpu_and_repeats_with_a_seed() {
    let Some(_cuda) = gpu() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let model = dir.path().join("llama");
    let config = write_llama(&model);
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let spec = publish(&store, &model, "llama", "generation").await;

    // In f32 the GPU's KV-cached generation equals the CPU's full recomputation.
    let f32_runner = start_runner(&store, &dir.path().join("cache-f32"), 4096 * MIB, GpuDtype::F32);
    let (greedy, tokens) = generate(&f32_runner, &spec, 0.0, 0).await;
    assert_eq!(tokens, 12);
    assert_eq!(greedy.split_whitespace().collect::<Vec<_>>().join(" "), reference_greedy(&model, &config, 12));
    let f32_cost = memory_of(&status(&f32_runner).await, &spec);

    // By default it runs in bf16: half the memory, and a seed gives the same text again.
    let bf16_runner = start_runner(&store, &dir.path().join("cache-bf16"), 4096 * MIB, GpuDtype::Auto);
    let first = generate(&bf16_runner, &spec, 0.8, 7).await;
    let second = generate(&bf16_runner, &spec, 0.8, 7).await;
    assert_eq!(first.1, 12);
    assert_eq!(first, second, "the same seed gives the same text");
    let bf16_cost = memory_of(&status(&bf16_runner).await, &spec);
    assert!(bf16_cost >= tensor_bytes(&model, 2), "bf16 cost {bf16_cost}");
    assert!(bf16_cost < f32_cost * 3 / 4, "bf16 cost {bf16_cost} against f32 {f32_cost}: not in half precision");
}
