//! The commit-time safetensors check over arbitrary files: it answers, never panics, and
//! accepts only files whose header it could read.
#![no_main]

libfuzzer_sys::fuzz_target!(|file: &[u8]| {
    if registry::validate::check_safetensors_bytes(file).is_ok() {
        let len = u64::from_le_bytes(file[..8].try_into().expect("an accepted file has a length prefix"));
        assert!(8 + len <= file.len() as u64, "an accepted header lies inside the file");
    }
});
