//! The GGUF header reader over arbitrary files: it answers, never panics, and every tensor it
//! accepts lies inside the file, so no loader sized by it allocates more than the file holds.
#![no_main]

libfuzzer_sys::fuzz_target!(|file: &[u8]| {
    if let Ok(header) = formats::gguf::parse(file, file.len() as u64) {
        for t in header.tensors.values() {
            assert!(t.bytes <= file.len() as u64, "an accepted tensor fits the file");
        }
        let weights = formats::Weights { gguf: Some((header, file.len() as u64)), ..Default::default() };
        let _ = formats::admit("generation", br#"{"model_type": "llama"}"#, &weights);
    }
});
