//! Where models run and in what floating-point type, and what loading one costs there.
//!
//! The CUDA GPU when the runner is built with `cuda` and one is present, else the CPU. On the
//! CPU every family computes in f32. On a GPU, encoders and generators keep their weights in
//! half precision unless told otherwise (`[runner] gpu_dtype`). A model's cost, which the
//! cache weighs it by, is the device memory its load really took under CUDA (read from the
//! driver around the load), and the bytes of its tensors on the CPU.

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// The floating-point type of model weights on a GPU (`[runner] gpu_dtype`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuDtype {
    /// The model's own half-precision type (`torch_dtype` or `dtype` in config.json) when it
    /// names one; else f16 for encoders and bf16 for generators.
    #[default]
    Auto,
    F32,
    F16,
    Bf16,
}

impl GpuDtype {
    fn resolve(self, declared: Option<&str>, half: DType) -> DType {
        match self {
            GpuDtype::F32 => DType::F32,
            GpuDtype::F16 => DType::F16,
            GpuDtype::Bf16 => DType::BF16,
            GpuDtype::Auto => match declared {
                Some("float16" | "half" | "fp16") => DType::F16,
                Some("bfloat16" | "bf16") => DType::BF16,
                _ => half,
            },
        }
    }
}

/// The device models are loaded onto, and the type their weights take there.
#[derive(Debug, Clone)]
pub struct Placement {
    pub device: Device,
    gpu_dtype: GpuDtype,
}

impl Placement {
    /// The CUDA GPU when built with `cuda` and one is present, else the CPU.
    pub fn new(gpu_dtype: GpuDtype) -> Self {
        Self { device: select_device(), gpu_dtype }
    }

    /// The type a model's weights take: f32 on the CPU; on a GPU the configured type, where
    /// `auto` is the type config.json declares (`declared`) when it is half precision, else
    /// the family's `half`.
    pub fn dtype(&self, declared: Option<&str>, half: DType) -> DType {
        if self.device.is_cpu() { DType::F32 } else { self.gpu_dtype.resolve(declared, half) }
    }

    /// Bytes a floating-point weight takes here, for estimating a model's cost before its load
    /// (a family may keep more, as the LSTM classifier keeps f32: the measured cost corrects it).
    pub fn float_bytes(&self) -> u64 {
        self.dtype(None, DType::F16).size_in_bytes() as u64
    }

    /// Runs `load`, which answers a model and the bytes of its tensors, and answers the model
    /// with its cost. On the CPU that is the tensors' bytes. Under CUDA it is the device memory
    /// the load took: free memory before less free memory after, with the device idle at
    /// both readings (so freed scratch memory is back with the driver) and loads taking turns.
    /// It is never counted below the tensors' bytes: a forward pass of another model holding
    /// scratch memory at the first reading, and freeing it before the second, would hide part
    /// of the load.
    pub fn measure_load<T>(&self, load: impl FnOnce() -> Result<(T, u64)>) -> Result<(T, u64)> {
        #[cfg(feature = "cuda")]
        if let Device::Cuda(cuda) = &self.device {
            use std::sync::{Mutex, PoisonError};
            static ONE_LOAD_AT_A_TIME: Mutex<()> = Mutex::new(());
            let _turn = ONE_LOAD_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
            let before = free_device_memory(cuda)?;
            let (model, tensor_bytes) = load()?;
            let after = free_device_memory(cuda)?;
            return Ok((model, before.saturating_sub(after).max(tensor_bytes)));
        }
        load()
    }
}

/// Device memory the driver has free, once the device has finished its work (the runtime's
/// memory pool gives freed memory back at that point).
#[cfg(feature = "cuda")]
fn free_device_memory(cuda: &candle_core::CudaDevice) -> Result<u64> {
    let stream = cuda.cuda_stream();
    let context = stream.context();
    context
        .synchronize()
        .and_then(|()| context.mem_get_info())
        .map(|(free, _total)| free as u64)
        .map_err(|e| crate::error::Error::Device(e.to_string()))
}

/// How the runner names `device` to people (its status, its logs): `CPU`, `CUDA 0`, `Metal 0`.
pub fn name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "CPU".to_owned(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("CUDA {gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("Metal {gpu_id}"),
    }
}

fn select_device() -> Device {
    #[cfg(feature = "cuda")]
    match Device::cuda_if_available(0) {
        Ok(device) => return device,
        Err(e) => tracing::warn!(error = %e, "no usable CUDA device; using the CPU"),
    }
    Device::Cpu
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_computes_in_f32_whatever_is_configured() {
        for gpu_dtype in [GpuDtype::Auto, GpuDtype::F16, GpuDtype::Bf16] {
            let cpu = Placement { device: Device::Cpu, gpu_dtype };
            assert_eq!(cpu.dtype(Some("bfloat16"), DType::F16), DType::F32);
        }
    }

    #[test]
    fn auto_takes_the_declared_half_precision_else_the_familys() {
        assert_eq!(GpuDtype::Auto.resolve(Some("bfloat16"), DType::F16), DType::BF16);
        assert_eq!(GpuDtype::Auto.resolve(Some("float16"), DType::BF16), DType::F16);
        assert_eq!(GpuDtype::Auto.resolve(Some("float32"), DType::F16), DType::F16, "f32 checkpoints run in half");
        assert_eq!(GpuDtype::Auto.resolve(None, DType::BF16), DType::BF16);
        assert_eq!(GpuDtype::F32.resolve(Some("bfloat16"), DType::F16), DType::F32, "the setting wins");
        assert_eq!(GpuDtype::Bf16.resolve(Some("float16"), DType::F16), DType::BF16);
    }

    #[test]
    fn devices_are_named_for_people() {
        assert_eq!(name(&Device::Cpu), "CPU");
    }

    #[test]
    fn the_cpu_cost_is_what_the_loader_counted() {
        let cpu = Placement { device: Device::Cpu, gpu_dtype: GpuDtype::Auto };
        let (model, cost) = cpu.measure_load(|| Ok(("model", 1234))).expect("a load that succeeds");
        assert_eq!((model, cost), ("model", 1234));
        let failed = cpu.measure_load::<()>(|| Err(crate::error::Error::InvalidRequest("bad".into())));
        assert!(failed.is_err());
    }

    #[test]
    fn gpu_dtype_reads_from_config_in_lowercase() {
        #[derive(Deserialize)]
        struct C {
            gpu_dtype: GpuDtype,
        }
        let parse = |s: &str| serde_json::from_str::<C>(s).map(|c| c.gpu_dtype).ok();
        assert_eq!(parse(r#"{"gpu_dtype":"bf16"}"#), Some(GpuDtype::Bf16));
        assert_eq!(parse(r#"{"gpu_dtype":"auto"}"#), Some(GpuDtype::Auto));
        assert_eq!(parse(r#"{"gpu_dtype":"float64"}"#), None);
    }
}
