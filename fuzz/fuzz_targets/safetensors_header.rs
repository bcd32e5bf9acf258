//! The safetensors header check over arbitrary files: it answers, never panics, and accepts
//! only files whose header and tensors lie inside them.
#![no_main]

libfuzzer_sys::fuzz_target!(|file: &[u8]| {
    if let Ok(tensors) = formats::safetensors::check_bytes(file) {
        let len = u64::from_le_bytes(file[..8].try_into().expect("an accepted file has a length prefix"));
        assert!(8 + len <= file.len() as u64, "an accepted header lies inside the file");
        for t in tensors.values() {
            assert!(8 + len + t.end <= file.len() as u64, "an accepted tensor lies inside the file");
        }
    }
});
