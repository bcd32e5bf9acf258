//! Bounds a tenant's `tokenizer.json` must keep. A tokenizer is a program the runner runs on
//! every input: its normalizers can grow text (a `Replace` of `a` by a million `x`, or ten
//! replaces in a row each growing it tenfold), its added vocabulary is matched against every
//! input, and its tables take memory. These checks run at commit and again before a load.

use serde_json::Value;

/// Most added tokens (special and added words) a tokenizer may bring.
pub const MAX_ADDED_TOKENS: usize = 100_000;
/// Most bytes of one added token.
pub const MAX_ADDED_TOKEN_BYTES: usize = 1024;
/// Most a tokenizer's normalizers may grow a text, all of them together (64 bytes in place of
/// every byte): real ones replace a space by `▁` (3 bytes) or prepend one.
pub const MAX_GROWTH: u64 = 64;
/// Nesting of `Sequence` normalizers.
const MAX_DEPTH: usize = 8;

/// What the checks learnt of a tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// How many times longer (in bytes) its normalizers may make a text, at most.
    pub growth: u64,
}

/// Memory a loaded tokenizer takes per byte of its `tokenizer.json`. Measured with tokenizers
/// 0.23 (the resident memory of four copies): all-MiniLM-L6-v2's WordPiece file 16.8×, large
/// byte-level BPE and word-level vocabularies 6.7×; counted at 20×.
pub const MEMORY_PER_FILE_BYTE: u64 = 20;

/// Checks a tokenizer.json; every problem is listed.
pub fn check(bytes: &[u8]) -> Result<Facts, Vec<String>> {
    let json: Value = serde_json::from_slice(bytes).map_err(|e| vec![format!("is not JSON: {e}")])?;
    if !json.get("model").is_some_and(Value::is_object) {
        return Err(vec!["is not a tokenizers JSON file (no \"model\" object)".into()]);
    }
    let mut problems = Vec::new();
    if let Some(added) = json.get("added_tokens").and_then(Value::as_array) {
        if added.len() > MAX_ADDED_TOKENS {
            problems.push(format!("adds {} tokens; at most {MAX_ADDED_TOKENS}", added.len()));
        }
        let long = added
            .iter()
            .filter_map(|t| t.get("content").and_then(Value::as_str))
            .find(|c| c.len() > MAX_ADDED_TOKEN_BYTES);
        if let Some(content) = long {
            problems.push(format!("adds a token of {} bytes; at most {MAX_ADDED_TOKEN_BYTES}", content.len()));
        }
    }
    let growth = match json.get("normalizer") {
        None | Some(Value::Null) => Ok(1),
        Some(normalizer) => growth(normalizer, 0),
    };
    let growth = match growth {
        Ok(g) if g <= MAX_GROWTH => g,
        Ok(g) => {
            problems
                .push(format!("its normalizer can make a text {g} times longer; at most {MAX_GROWTH} times is served"));
            MAX_GROWTH
        }
        Err(m) => {
            problems.push(m);
            MAX_GROWTH
        }
    };
    if problems.is_empty() { Ok(Facts { growth }) } else { Err(problems) }
}

/// How many times longer a normalizer can make a text, at most (saturating).
fn growth(normalizer: &Value, depth: usize) -> Result<u64, String> {
    if depth > MAX_DEPTH {
        return Err("its normalizers nest too deeply".into());
    }
    let kind = normalizer.get("type").and_then(Value::as_str).unwrap_or_default();
    let text_len = |key: &str| normalizer.get(key).and_then(Value::as_str).map_or(0, str::len) as u64;
    Ok(match kind {
        "Sequence" => {
            let mut total: u64 = 1;
            for inner in normalizer.get("normalizers").and_then(Value::as_array).into_iter().flatten() {
                total = total.saturating_mul(growth(inner, depth + 1)?);
            }
            total
        }
        // Every match (at worst every byte, or the empty string between bytes) becomes `content`.
        "Replace" => text_len("content").saturating_add(1),
        "Prepend" => text_len("prepend").saturating_add(1),
        // A SentencePiece character map replaces characters by its own strings.
        "Precompiled" => precompiled_longest(normalizer.get("precompiled_charsmap"))?.saturating_add(1),
        // Unicode normalization forms grow a character to at most 18 (NFKD of U+FDFA).
        "NFD" | "NFKD" | "NFC" | "NFKC" => 18,
        // Case, accents, stripping and BERT's cleaning change a character into at most 3.
        _ => 3,
    })
}

/// The longest replacement string of a SentencePiece precompiled character map (base64 of a
/// u32 trie size, the trie, then NUL-separated replacements).
fn precompiled_longest(charsmap: Option<&Value>) -> Result<u64, String> {
    use base64::Engine as _;
    let Some(encoded) = charsmap.and_then(Value::as_str) else { return Ok(0) };
    let blob = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| "its precompiled character map is not base64".to_owned())?;
    let trie = blob.get(..4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let strings = trie.and_then(|t| blob.get(4usize.saturating_add(t)..));
    let strings = strings.ok_or_else(|| "its precompiled character map is cut short".to_owned())?;
    Ok(strings.split(|b| *b == 0).map(<[u8]>::len).max().unwrap_or(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer(normalizer: Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"model": {"type": "WordLevel", "vocab": {}}, "normalizer": normalizer}))
            .expect("json")
    }

    #[test]
    fn a_replace_by_a_million_bytes_is_refused() {
        let bomb = tokenizer(serde_json::json!({
            "type": "Replace", "pattern": {"String": "a"}, "content": "x".repeat(1_000_000)
        }));
        assert!(check(&bomb).is_err_and(|p| p[0].contains("1000001 times longer")), "{:?}", check(&bomb));
    }

    #[test]
    fn small_replaces_in_a_row_multiply() {
        let step = serde_json::json!({"type": "Replace", "pattern": {"String": "a"}, "content": "aaaaaaaaaa"});
        let ten = tokenizer(serde_json::json!({"type": "Sequence", "normalizers": vec![step; 10]}));
        assert!(check(&ten).is_err(), "11^10 growth refused");
    }

    #[test]
    fn real_normalizers_pass() {
        let bert = tokenizer(serde_json::json!({"type": "BertNormalizer", "lowercase": true}));
        assert_eq!(check(&bert), Ok(Facts { growth: 3 }));
        let llama = tokenizer(serde_json::json!({"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}
        ]}));
        assert_eq!(check(&llama), Ok(Facts { growth: 16 }));
        let none = br#"{"model": {"type": "BPE"}, "normalizer": null}"#;
        assert_eq!(check(none), Ok(Facts { growth: 1 }));
    }

    #[test]
    fn added_vocabularies_are_bounded() {
        let tokens: Vec<Value> =
            (0..MAX_ADDED_TOKENS + 1).map(|i| serde_json::json!({"id": i, "content": format!("t{i}")})).collect();
        let many = serde_json::to_vec(&serde_json::json!({"model": {}, "added_tokens": tokens})).expect("json");
        assert!(check(&many).is_err_and(|p| p[0].contains("adds 100001 tokens")));
        let long = serde_json::json!({"model": {}, "added_tokens": [{"id": 0, "content": "x".repeat(5000)}]});
        assert!(check(&serde_json::to_vec(&long).expect("json")).is_err_and(|p| p[0].contains("5000 bytes")));
        assert!(check(b"{}").is_err_and(|p| p[0].contains("no \"model\"")));
    }

    #[test]
    fn precompiled_maps_count_their_longest_replacement() {
        use base64::Engine as _;
        let mut blob = 2u32.to_le_bytes().to_vec();
        blob.extend([0, 0]);
        blob.extend(b"ab\0");
        blob.extend(vec![b'x'; 500]);
        let map = base64::engine::general_purpose::STANDARD.encode(&blob);
        let t = tokenizer(serde_json::json!({"type": "Precompiled", "precompiled_charsmap": map}));
        assert!(check(&t).is_err_and(|p| p[0].contains("501 times")));
    }
}
