//! Element-wise work fused into one parallel pass on the CPU, where candle would make several
//! single-purpose passes: GELU (the exact, erf form) of a dense layer's output plus its bias,
//! and the layer norm of a dense layer's output plus its bias plus the residual. Other
//! devices and dtypes take candle's ops.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Module as _, Result, Shape, Tensor};
use candle_nn::LayerNorm;
use rayon::prelude::*;

/// Rows handed to one rayon task.
const ROWS_PER_TASK: usize = 8;

/// `gelu_erf(x + bias)`, `bias` broadcast over the rows of `x`.
pub fn bias_gelu(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 && bias.dtype() == DType::F32 {
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
        let (x, bias) = f32_slices(self.name(), (s1, l1), (s2, l2))?;
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

/// `layer_norm(x + bias + residual)`: what closes each attention and feed-forward block of a
/// BERT layer.
pub struct ResidualNorm {
    bias: Tensor,
    norm: LayerNorm,
    /// The same parameters as plain vectors, for the CPU pass.
    cpu: Option<ResidualNormCpu>,
}

struct ResidualNormCpu {
    bias: Vec<f32>,
    weight: Vec<f32>,
    shift: Vec<f32>,
    eps: f32,
}

impl ResidualNorm {
    pub fn new(bias: Tensor, weight: Tensor, shift: Tensor, eps: f64) -> Result<Self> {
        let cpu = if bias.device().is_cpu() && bias.dtype() == DType::F32 {
            Some(ResidualNormCpu {
                bias: bias.to_vec1()?,
                weight: weight.to_vec1()?,
                shift: shift.to_vec1()?,
                eps: eps as f32,
            })
        } else {
            None
        };
        Ok(Self { bias, norm: LayerNorm::new(weight, shift, eps), cpu })
    }

    /// `x` and `residual` are (rows, width).
    pub fn forward(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        match &self.cpu {
            Some(op) if x.dtype() == DType::F32 && residual.dtype() == DType::F32 => {
                x.contiguous()?.apply_op2_no_bwd(&residual.contiguous()?, op)
            }
            _ => self.norm.forward(&(x.broadcast_add(&self.bias)? + residual)?),
        }
    }
}

impl CustomOp2 for ResidualNormCpu {
    fn name(&self) -> &'static str {
        "residual-layer-norm"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, residual) = f32_slices(self.name(), (s1, l1), (s2, l2))?;
        let width = self.bias.len();
        if width == 0 || x.len() % width != 0 || x.len() != residual.len() || l1.dims().last() != Some(&width) {
            candle_core::bail!("residual-layer-norm: rows of shape {:?} do not fit a width of {width}", l1.dims())
        }
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(width).zip(x.par_chunks(width).zip(residual.par_chunks(width))).for_each(
            |(out, (x, residual))| {
                let mut sum = 0f32;
                for (((o, &x), &r), &b) in out.iter_mut().zip(x).zip(residual).zip(&self.bias) {
                    *o = x + b + r;
                    sum += *o;
                }
                let mean = sum / width as f32;
                let mut squares = 0f32;
                for o in out.iter_mut() {
                    *o -= mean;
                    squares += *o * *o;
                }
                let scale = 1.0 / (squares / width as f32 + self.eps).sqrt();
                for ((o, &w), &s) in out.iter_mut().zip(&self.weight).zip(&self.shift) {
                    *o = *o * scale * w + s;
                }
            },
        );
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// The data of two contiguous f32 tensors.
fn f32_slices<'a>(
    op: &str,
    (s1, l1): (&'a CpuStorage, &Layout),
    (s2, l2): (&'a CpuStorage, &Layout),
) -> Result<(&'a [f32], &'a [f32])> {
    let (CpuStorage::F32(a), CpuStorage::F32(b)) = (s1, s2) else { candle_core::bail!("{op} takes f32 tensors") };
    let (Some((a_start, a_end)), Some((b_start, b_end))) = (l1.contiguous_offsets(), l2.contiguous_offsets()) else {
        candle_core::bail!("{op} takes contiguous tensors")
    };
    Ok((&a[a_start..a_end], &b[b_start..b_end]))
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
    use candle_core::{DType, Device, Module as _, Tensor};

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

    #[test]
    fn fused_residual_norm_matches_candles_ops() -> candle_core::Result<()> {
        let (rows, width) = (5, 384);
        let ramp =
            |n: usize, a: f64, b: f64| Tensor::arange(0u32, n as u32, &Device::Cpu)?.to_dtype(DType::F32)?.affine(a, b);
        let x = ramp(rows * width, 0.003, -2.0)?.sin()?.reshape((rows, width))?;
        let residual = ramp(rows * width, 0.007, 1.0)?.cos()?.reshape((rows, width))?;
        let (bias, weight, shift) = (ramp(width, 0.01, -1.0)?, ramp(width, 0.002, 0.5)?, ramp(width, -0.001, 0.1)?);
        let fused =
            super::ResidualNorm::new(bias.clone(), weight.clone(), shift.clone(), 1e-12)?.forward(&x, &residual)?;
        let norm = candle_nn::LayerNorm::new(weight, shift, 1e-12);
        let reference = norm.forward(&(x.broadcast_add(&bias)? + residual)?)?;
        let diff = (fused - reference)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "the fused residual layer norm differs by {diff}");
        Ok(())
    }
}
