//! Upload paths: whatever is accepted stays below the folder it is written into (the runner's
//! artifact cache, `modelgate pull`'s target) and names a file, not a folder.
#![no_main]

use std::path::{Component, Path};

libfuzzer_sys::fuzz_target!(|raw: &[u8]| {
    let Ok(text) = std::str::from_utf8(raw) else { return };
    let Ok(path) = registry::names::FilePath::parse(text) else { return };
    let base = Path::new("/base");
    let joined = base.join(path.as_str());
    assert!(joined.starts_with(base), "{text:?} escapes the folder");
    assert!(Path::new(path.as_str()).components().all(|c| matches!(c, Component::Normal(_))), "{text:?}");
    assert!(!path.file_name().is_empty());
});
