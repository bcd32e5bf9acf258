//! config.json family detection: any bytes are judged for every task, and what is accepted
//! is an architecture the runner has.
#![no_main]

use registry::names::Task;

libfuzzer_sys::fuzz_target!(|config: &[u8]| {
    for task in [Task::Embedding, Task::Classification, Task::Generation] {
        if let Ok(arch) = registry::validate::check_config(task, config) {
            assert!(registry::validate::supported(task).contains(&arch.as_str()), "{arch} for {task:?}");
        }
    }
});
