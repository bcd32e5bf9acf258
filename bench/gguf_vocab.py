"""Copies a GGUF written by runner::convert::llama_to_gguf (bench/gen_model.rs) and adds what
llama.cpp needs to load it: the feed-forward width and a vocabulary (the model's word-level
tokens as an SPM list with zero scores). candle reads the model without them.

Usage: gguf_vocab.py IN.gguf OUT.gguf TOKENIZER.json CONFIG.json GGUF_PY_DIR"""
import json
import sys

src, dst, tokenizer, config, gguf_py = sys.argv[1:6]
sys.path.insert(0, gguf_py)
import gguf  # noqa: E402  (llama.cpp's own gguf-py, from the same sources)

reader = gguf.GGUFReader(src)
arch = reader.fields["general.architecture"]
writer = gguf.GGUFWriter(dst, arch=str(bytes(arch.parts[arch.data[0]]), "utf-8"))
for name, field in reader.fields.items():
    if name.startswith("GGUF.") or name == "general.architecture":
        continue
    kind = field.types[0]
    if kind == gguf.GGUFValueType.STRING:
        writer.add_string(name, str(bytes(field.parts[field.data[0]]), "utf-8"))
    elif kind == gguf.GGUFValueType.ARRAY:
        raise SystemExit(f"{name}: array fields are not copied")
    else:
        writer.add_key_value(name, field.parts[field.data[0]][0], kind)
writer.add_uint32("llama.feed_forward_length", json.load(open(config))["intermediate_size"])
vocab = json.load(open(tokenizer))["model"]["vocab"]
tokens = [token for token, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
writer.add_string("tokenizer.ggml.model", "llama")
writer.add_array("tokenizer.ggml.tokens", tokens)
writer.add_array("tokenizer.ggml.scores", [0.0] * len(tokens))
writer.add_array("tokenizer.ggml.token_type", [1] * len(tokens))
for tensor in reader.tensors:
    writer.add_tensor(tensor.name, tensor.data, raw_shape=tensor.data.shape, raw_dtype=tensor.tensor_type)
writer.write_header_to_file()
writer.write_kv_data_to_file()
writer.write_tensors_to_file()
writer.close()
