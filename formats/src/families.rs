//! The model families a runner serves, said once: each is a task and the `model_type` its
//! config.json names. The registry refuses at commit what no family serves, admission plans by
//! it, and the runner's `ModelConfig` loads each (a runner test keeps the two equal).

/// The small LSTM text classifier's own format: its words come from `vocab.json`.
pub const LSTM: &str = "lstm_classifier";

/// (task, config.json `model_type`) of every family.
pub const FAMILIES: &[(&str, &str)] = &[
    ("embedding", "bert"),
    ("classification", "bert"),
    ("classification", LSTM),
    ("generation", "llama"),
    ("generation", "qwen2"),
];

/// Whether a family serves `task` for `model_type`.
pub fn serves(task: &str, model_type: &str) -> bool {
    FAMILIES.contains(&(task, model_type))
}

/// The `model_type`s served for `task`.
pub fn architectures(task: &str) -> Vec<&'static str> {
    FAMILIES.iter().filter(|(t, _)| *t == task).map(|(_, m)| *m).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_task_names_its_architectures() {
        assert!(serves("classification", LSTM));
        assert!(!serves("embedding", LSTM));
        assert_eq!(architectures("generation"), ["llama", "qwen2"]);
    }
}
