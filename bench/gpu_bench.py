"""Steps 2 and 3 of bench/gpu.sh: embeddings and generation through a running `modelgate dev`
against PyTorch on the same card, with the same weights and inputs.

Usage: gpu_bench.py GATEWAY_URL ADMIN_KEY_FILE MINILM_DIR WORK_DIR RESULTS_MD
MINILM_DIR holds all-MiniLM-L6-v2's config and tokenizer (no weights: random ones are made
here). MODELGATE_GPU_DRY_RUN=1 runs the same steps on the CPU with small models, to check the
script on a machine without a GPU; its figures mean nothing.
"""

import http.client
import json
import os
import random
import shutil
import sys
import threading
import time
import traceback
import urllib.parse
import urllib.request

import torch

MG, ADMIN_KEY_FILE, MINILM_DIR, WORK, RESULTS = sys.argv[1:6]
DRY = bool(os.environ.get("MODELGATE_GPU_DRY_RUN"))
DEVICE = "cpu" if DRY else "cuda"
SENTENCES = 512 if DRY else 8192
lines = []


def say(text=""):
    print(text, flush=True)
    lines.append(text)


def call(method, path, key, body=None):
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    req = urllib.request.Request(MG + path, data, headers, method=method)
    with urllib.request.urlopen(req, timeout=600) as r:
        raw = r.read()
    return json.loads(raw) if raw else None


def put_file(path, key, local):
    """Streams a file (the weights are gigabytes) to the gateway."""
    url = urllib.parse.urlparse(MG + path)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=600)
    size = os.path.getsize(local)
    conn.putrequest("PUT", url.path)
    conn.putheader("Authorization", f"Bearer {key}")
    conn.putheader("Content-Length", str(size))
    conn.endheaders()
    with open(local, "rb") as f:
        while chunk := f.read(8 << 20):
            conn.send(chunk)
    answer = conn.getresponse()
    body = answer.read()
    assert answer.status < 300, f"PUT {path}: {answer.status} {body[:300]!r}"


def upload(key, name, task, folder):
    base = f"/api/v1/tenants/gpu/models/{name}"
    call("POST", "/api/v1/tenants/gpu/models", key, {"name": name, "task": task})
    call("POST", f"{base}/versions", key)
    for dirpath, _, files in os.walk(folder):
        for f in files:
            local = os.path.join(dirpath, f)
            put_file(f"{base}/versions/1/files/{os.path.relpath(local, folder)}", key, local)
    call("POST", f"{base}/versions/1/commit", key)


def runner_cost(admin, model):
    answer = call("GET", "/api/v1/admin/runners", admin)
    for r in answer["data"]:
        for m in r.get("models", []):
            if m["name"].startswith(f"gpu/{model}@"):
                return m["memory_bytes"], r.get("device")
    raise AssertionError(f"{model} is not loaded on any runner: {answer}")


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


admin = open(ADMIN_KEY_FILE).read().strip()
call("POST", "/api/v1/tenants", admin, {"name": "gpu"})
key = call("POST", "/api/v1/tenants/gpu/keys", admin, {"name": "bench", "role": "developer"})["key"]
if DEVICE == "cuda":
    say(f"Card: {torch.cuda.get_device_name(0)}; PyTorch {torch.__version__}")

# --- 2. Embeddings -------------------------------------------------------------------------
def embeddings():
    from sentence_transformers import SentenceTransformer
    from transformers import BertConfig, BertModel

    minilm = os.path.join(WORK, "minilm")
    shutil.copytree(MINILM_DIR, minilm)
    torch.manual_seed(0)
    BertModel(BertConfig.from_pretrained(minilm)).save_pretrained(minilm, safe_serialization=True)
    upload(key, "minilm", "embedding", minilm)

    words = ("a man woman child dog cat is are was eating playing riding guitar horse food bread the on in "
             "with of and quickly slowly big small red green house street park river music plays sings runs").split()
    rng = random.Random(0)
    sentences = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 30))) + "." for _ in range(SENTENCES)]

    def embed(batch):
        return [d["embedding"] for d in call("POST", "/v1/embeddings", key, {"model": "minilm", "input": batch})["data"]]

    def gateway_throughput(clients, per_request):
        batches = [sentences[i:i + per_request] for i in range(0, len(sentences), per_request)]
        lock, failures = threading.Lock(), []
        started = time.perf_counter()

        def worker():
            while True:
                with lock:
                    if not batches:
                        return
                    b = batches.pop()
                try:
                    assert len(embed(b)) == len(b)
                except Exception as e:  # counted, and the run fails below
                    failures.append(e)

        threads = [threading.Thread(target=worker) for _ in range(clients)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert not failures, failures[:3]
        return len(sentences) / (time.perf_counter() - started)

    started = time.perf_counter()
    ours = embed(sentences[:64])
    say(f"Embeddings: first request (fetch, load, run): {(time.perf_counter() - started) * 1000:.0f} ms")
    reference = SentenceTransformer(minilm, device=DEVICE)
    want = reference.encode(sentences[:64], batch_size=32, convert_to_tensor=True).float().cpu()
    got = torch.tensor(ours)
    cosine = torch.nn.functional.cosine_similarity(got, want).min().item()
    worst = (got - want).abs().max().item()
    say(f"Embeddings against PyTorch f32 on the same card, 64 sentences: lowest cosine {cosine:.6f}, "
        f"largest difference {worst:.2e}")
    assert cosine > 0.999 and worst < 5e-3, "the gateway's embeddings drifted from PyTorch's"
    cost, device = runner_cost(admin, "minilm")
    say(f"Runner device: {device}; MiniLM-shaped model's measured cost {cost / 2**20:.1f} MiB "
        f"(f32 parameters: {sum(p.numel() for p in reference.parameters()) * 4 / 2**20:.1f} MiB)")

    gateway_throughput(16, 32)  # warm-up
    rows = []
    for clients, per_request in [(8, 32), (32, 32), (64, 16), (128, 8)]:
        rows.append((f"gateway, {clients} clients x {per_request} sentences", gateway_throughput(clients, per_request)))

    def torch_throughput(model, batch_size):
        model.encode(sentences[:256], batch_size=batch_size)
        sync()
        started = time.perf_counter()
        model.encode(sentences, batch_size=batch_size)
        sync()
        return len(sentences) / (time.perf_counter() - started)

    rows.append(("PyTorch sentence-transformers f32, encode(batch_size=32)", torch_throughput(reference, 32)))
    if DEVICE == "cuda":
        reference.half()
        rows.append(("PyTorch sentence-transformers f16, encode(batch_size=32)", torch_throughput(reference, 32)))
        rows.append(("PyTorch sentence-transformers f16, encode(batch_size=256)", torch_throughput(reference, 256)))
    del reference
    say()
    say(f"| MiniLM-shaped embeddings, {len(sentences)} sentences of 5-30 words | sentences/s |")
    say("| --- | --- |")
    for name, rate in rows:
        say(f"| {name} | {rate:,.0f} |")
    say()


# --- 3. Generation -------------------------------------------------------------------------
def generation():
    from transformers import LlamaConfig, LlamaForCausalLM

    VOCAB = 32000
    shape = dict(hidden_size=256, intermediate_size=704, num_hidden_layers=2, num_attention_heads=8,
                 num_key_value_heads=4) if DRY else \
        dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
             num_key_value_heads=4)  # TinyLlama-1.1B
    config = LlamaConfig(vocab_size=VOCAB, max_position_embeddings=2048, rms_norm_eps=1e-5, rope_theta=10000.0,
                         bos_token_id=1, eos_token_id=VOCAB + 1, pad_token_id=0, tie_word_embeddings=False, **shape)
    dtype = torch.float32 if DRY else torch.bfloat16
    with torch.device(DEVICE):
        torch.manual_seed(0)
        llama = LlamaForCausalLM(config).to(dtype).eval()
    llama_dir = os.path.join(WORK, "llama")
    llama.save_pretrained(llama_dir, safe_serialization=True)
    vocab = {("<unk>" if i == 0 else f"w{i}"): i for i in range(VOCAB)}
    with open(os.path.join(llama_dir, "tokenizer.json"), "w") as f:
        json.dump({"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
                   "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": None, "decoder": None,
                   "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}}, f)
    weights = sum(os.path.getsize(os.path.join(llama_dir, f)) for f in os.listdir(llama_dir) if f.endswith(".safetensors"))
    started = time.perf_counter()
    upload(key, "llama", "generation", llama_dir)
    say(f"Generation model: {sum(p.numel() for p in llama.parameters()) / 1e9:.2f} B parameters, "
        f"{weights / 2**30:.2f} GiB of {str(dtype).removeprefix('torch.')} safetensors, uploaded in "
        f"{time.perf_counter() - started:.1f} s")

    PROMPT = [11, 22, 33, 44, 55, 66, 77, 88]
    TOKENS = 128

    def complete(tokens):
        body = {"model": "llama", "prompt": " ".join(f"w{i}" for i in PROMPT), "max_tokens": tokens, "temperature": 0}
        started = time.perf_counter()
        usage = call("POST", "/v1/completions", key, body)["usage"]
        return usage["completion_tokens"], time.perf_counter() - started

    started = time.perf_counter()
    complete(1)
    say(f"Generation: first request (fetch, load, one token): {(time.perf_counter() - started) * 1000:.0f} ms")
    complete(8)
    runs = [complete(TOKENS) for _ in range(3)]
    ours_rate = sum(r[0] for r in runs) / sum(r[1] for r in runs)
    assert all(r[0] == TOKENS for r in runs), runs
    cost, _ = runner_cost(admin, "llama")
    if DEVICE == "cuda":
        allocated = torch.cuda.memory_allocated()
        say(f"Measured cost of the generation model on the runner: {cost / 2**20:,.0f} MiB; PyTorch holds "
            f"{allocated / 2**20:,.0f} MiB for the same weights")

    ids = torch.tensor([PROMPT], device=DEVICE)
    with torch.no_grad():
        llama.generate(ids, max_new_tokens=8, min_new_tokens=8, do_sample=False)
        sync()
        started = time.perf_counter()
        for _ in range(3):
            out = llama.generate(ids, max_new_tokens=TOKENS, min_new_tokens=TOKENS, do_sample=False)
            assert out.shape[1] == len(PROMPT) + TOKENS
        sync()
    torch_rate = 3 * TOKENS / (time.perf_counter() - started)
    say()
    say(f"| greedy generation, {TOKENS} tokens after an {len(PROMPT)}-token prompt, batch 1 | tokens/s |")
    say("| --- | --- |")
    say(f"| modelgate, through the gateway (HTTP, {str(dtype).removeprefix('torch.')}) | {ours_rate:,.1f} |")
    say(f"| PyTorch transformers `generate` ({str(dtype).removeprefix('torch.')}, same weights) | {torch_rate:,.1f} |")

failed = []
for section in (embeddings, generation):
    try:
        section()
    except Exception:  # the next section still runs; the script fails at the end
        traceback.print_exc()
        failed.append(section.__name__)
        say(f"{section.__name__}: FAILED, see the log")
with open(RESULTS, "w") as f:
    f.write("\n".join(lines) + "\n")
sys.exit(1 if failed else 0)
