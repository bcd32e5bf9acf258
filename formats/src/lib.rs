#![doc = include_str!("../README.md")]

pub mod admission;
pub mod families;
pub mod gguf;
pub mod safetensors;
pub mod tokenizer;

pub use admission::{Plan, Weights, admit};
