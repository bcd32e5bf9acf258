//! KServe v2 infer bodies: every body is decoded or refused with a 400, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|body: &[u8]| {
    match gateway::decode_infer(body) {
        Ok(texts) => assert!(!texts.is_empty()),
        Err(e) => assert_eq!(e.status().as_u16(), 400, "{e}"),
    }
});
