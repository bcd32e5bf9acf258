#![doc = include_str!("../README.md")]

/// Generated from `runner.proto`.
pub mod runner {
    pub mod v1 {
        #![allow(clippy::all, clippy::pedantic, reason = "generated code")]
        tonic::include_proto!("modelgate.runner.v1");
    }
}

pub mod trace;

pub use runner::v1;

/// gRPC messages up to this size are accepted both ways (large embedding batches).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
