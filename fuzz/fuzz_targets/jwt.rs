//! The bearer-token path: any string is a clean answer, and none verifies (forging an
//! EdDSA signature of this gateway's key is not something a fuzzer can do).
#![no_main]

use std::sync::LazyLock;

use gateway::tokens::{TokenIssuer, header_of};

static ISSUER: LazyLock<TokenIssuer> = LazyLock::new(|| {
    let pem = TokenIssuer::generate_pem().expect("a key");
    TokenIssuer::new(&pem, &[], 60).expect("an issuer")
});

libfuzzer_sys::fuzz_target!(|raw: &[u8]| {
    let Ok(token) = std::str::from_utf8(raw) else { return };
    let _ = header_of(token);
    assert!(ISSUER.verify(token).is_err(), "a token nobody signed verified: {token:?}");
});
