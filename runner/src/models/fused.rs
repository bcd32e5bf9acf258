//! Element-wise work fused into one parallel pass on the CPU, where candle would make several
//! single-purpose passes: GELU (the exact, erf form) of a dense layer's output plus its bias.
//! Other devices and dtypes take candle's ops.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Rows handed to one rayon task.
const ROWS_PER_TASK: usize = 8;

/// `gelu_erf(x + bias)`, `bias` broadcast over the rows of `x`.
pub fn bias_gelu(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 && bias.dtype() == candle_core::DType::F32 {
        x.contiguous()?.apply_op2_no_bwd(&bias.contiguous()?, &BiasGelu)
    } else {
        x.broadcast_add(bias)?.gelu_erf()
    }
}

struct BiasGelu;

impl CustomOp2 for BiasGelu {
    fn name(&self) -> &'static str {
        "bias-gelu"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(x), CpuStorage::F32(bias)) = (s1, s2) else {
            candle_core::bail!("bias-gelu takes f32 tensors")
        };
        let (Some((x_start, x_end)), Some((b_start, b_end))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            candle_core::bail!("bias-gelu takes contiguous tensors")
        };
        let (x, bias) = (&x[x_start..x_end], &bias[b_start..b_end]);
        let width = bias.len();
        if width == 0 || x.len() % width != 0 || l1.dims().last() != Some(&width) {
            candle_core::bail!("bias-gelu: a bias of {width} does not fit rows of shape {:?}", l1.dims())
        }
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(width * ROWS_PER_TASK).zip(x.par_chunks(width * ROWS_PER_TASK)).for_each(|(out, x)| {
            for (out, x) in out.chunks_exact_mut(width).zip(x.chunks_exact(width)) {
                for ((o, &x), &b) in out.iter_mut().zip(x).zip(bias) {
                    *o = gelu(x + b);
                }
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// erf as a rational function of x (odd over even polynomials, the single-precision
/// approximation Eigen and XLA use), exact to a few ulp; past |x| = 4 erf is ±1 in f32.
/// Branch-free, so the compiler vectorizes the loops above (plain products and sums: without
/// a target FMA, `mul_add` would be a libm call per element).
#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906_3e-4;
    p = x2 * p + -2.954_6e-3;
    p = x2 * p + -1.609_603_3e-2;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329e-3;
    q = x2 * q + -1.426_474e-2;
    x * p / q
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    #[test]
    fn fused_bias_gelu_matches_candles_exact_gelu() -> candle_core::Result<()> {
        let values: Vec<f32> = (0..4 * 301).map(|i| (i as f32 - 600.0) / 50.0).collect();
        let x = Tensor::from_vec(values, (4, 301), &Device::Cpu)?;
        let bias = Tensor::arange(0u32, 301, &Device::Cpu)?.to_dtype(DType::F32)?.affine(0.01, -1.5)?;
        let fused = super::bias_gelu(&x, &bias)?;
        // The reference in f64, where candle's erf is libm's.
        let reference = x.to_dtype(DType::F64)?.broadcast_add(&bias.to_dtype(DType::F64)?)?.gelu_erf()?;
        let diff = (fused.to_dtype(DType::F64)? - reference)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(diff < 2e-6, "fused GELU differs from the exact one by {diff}");
        Ok(())
    }
}
