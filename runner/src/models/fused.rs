//! Work fused into one parallel pass on the CPU, where candle would make several
//! single-purpose passes: GELU (the exact, erf form) of a dense layer's output plus its bias;
//! the layer norm of a dense layer's output plus its bias plus the residual; and multi-head
//! self-attention straight from the fused QKV product. Other devices and dtypes take candle's
//! ops.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Module as _, Result, Shape, Tensor};
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

/// Multi-head self-attention of a batch of `batch` sentences of `len` tokens, from `qkv`, the
/// QKV product (batch * len, 3 * hidden) before its `bias` (3 * hidden), with the query scale
/// folded into the weights. Per sentence and head it computes softmax(q kᵀ) v over the
/// sentence's real tokens only (`mask`, (batch, len), is 1 for a real token), reading q, k and
/// v where the product left them: no head-layout copies, no padded keys, no mask pass. Rows of
/// padding come out as zeros (nothing attends to them; pooling skips them). Answers
/// (batch * len, hidden), or None off the CPU or for other dtypes (the caller takes candle's ops).
pub fn attention(qkv: &Tensor, bias: &Tensor, mask: &Tensor, heads: usize) -> Result<Option<Tensor>> {
    let f32_cpu = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
    if !(f32_cpu(qkv) && f32_cpu(bias)) {
        return Ok(None);
    }
    // No copies where the caller converted already (bert.rs does, once for every layer).
    let mask = mask.to_dtype(DType::F32)?.contiguous()?;
    qkv.contiguous()?.apply_op3_no_bwd(&bias.contiguous()?, &mask, &Attention { heads }).map(Some)
}

struct Attention {
    heads: usize,
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (qkv, bias) = f32_slices(self.name(), (s1, l1), (s2, l2))?;
        let mask = f32_slice(self.name(), s3, l3)?;
        let (&[tokens, width], &[batch, len]) = (l1.dims(), l3.dims()) else {
            candle_core::bail!("attention: qkv {:?} and mask {:?} must be matrices", l1.dims(), l3.dims())
        };
        let hidden = width / 3;
        let heads = self.heads;
        if heads == 0 || hidden % heads != 0 || width != 3 * hidden || bias.len() != width || tokens != batch * len {
            candle_core::bail!(
                "attention: qkv {:?}, bias {}, mask {:?}, {heads} heads do not fit",
                l1.dims(),
                bias.len(),
                l3.dims()
            )
        }
        let size = hidden / heads;
        // Per (sentence, head): its context rows, (len, size), head-major.
        let mut per_head = vec![0f32; tokens * hidden];
        if len > 0 {
            per_head.par_chunks_mut(len * size).enumerate().for_each(|(task, out)| {
                let (sentence, head) = (task / heads, task % heads);
                let rows = &qkv[sentence * len * width..(sentence + 1) * len * width];
                let real: Vec<usize> = (0..len).filter(|&j| mask[sentence * len + j] > 0.5).collect();
                // This head's keys and values of the real tokens, with their biases.
                let gather = |part: usize| -> Vec<f32> {
                    let at = part * hidden + head * size;
                    let mut out = Vec::with_capacity(real.len() * size);
                    for &j in &real {
                        let row = &rows[j * width + at..j * width + at + size];
                        out.extend(row.iter().zip(&bias[at..at + size]).map(|(x, b)| x + b));
                    }
                    out
                };
                let (keys, values) = (gather(1), gather(2));
                let mut query = vec![0f32; size];
                let mut scores = vec![0f32; real.len()];
                for &i in &real {
                    let at = head * size;
                    for ((q, &x), &b) in
                        query.iter_mut().zip(&rows[i * width + at..i * width + at + size]).zip(&bias[at..])
                    {
                        *q = x + b;
                    }
                    let mut max = f32::NEG_INFINITY;
                    for (score, key) in scores.iter_mut().zip(keys.chunks_exact(size)) {
                        *score = dot(&query, key);
                        max = max.max(*score);
                    }
                    let mut sum = 0f32;
                    for score in &mut scores {
                        *score = (*score - max).exp();
                        sum += *score;
                    }
                    let context = &mut out[i * size..(i + 1) * size];
                    for (&p, value) in scores.iter().zip(values.chunks_exact(size)) {
                        let p = p / sum;
                        for (c, &v) in context.iter_mut().zip(value) {
                            *c += p * v;
                        }
                    }
                }
            });
        }
        // Back to one row per token: (batch * len, hidden).
        let mut out = vec![0f32; tokens * hidden];
        if len > 0 {
            out.par_chunks_mut(len * hidden).enumerate().for_each(|(sentence, out)| {
                for head in 0..heads {
                    let from =
                        &per_head[(sentence * heads + head) * len * size..(sentence * heads + head + 1) * len * size];
                    for (row, context) in out.chunks_exact_mut(hidden).zip(from.chunks_exact(size)) {
                        row[head * size..(head + 1) * size].copy_from_slice(context);
                    }
                }
            });
        }
        Ok((CpuStorage::F32(out), Shape::from((tokens, hidden))))
    }
}

/// A dot product in eight lanes, which the compiler vectorizes (a plain sum of products would
/// have to keep its order and stay scalar).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (a8.remainder(), b8.remainder());
    for (a, b) in a8.zip(b8) {
        for l in 0..8 {
            lanes[l] += a[l] * b[l];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(a, b)| a * b).sum();
    lanes.iter().sum::<f32>() + tail
}

/// The data of a contiguous f32 tensor.
fn f32_slice<'a>(op: &str, storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else { candle_core::bail!("{op} takes f32 tensors") };
    let Some((start, end)) = layout.contiguous_offsets() else { candle_core::bail!("{op} takes contiguous tensors") };
    Ok(&data[start..end])
}

/// The data of two contiguous f32 tensors.
fn f32_slices<'a>(
    op: &str,
    (s1, l1): (&'a CpuStorage, &Layout),
    (s2, l2): (&'a CpuStorage, &Layout),
) -> Result<(&'a [f32], &'a [f32])> {
    Ok((f32_slice(op, s1, l1)?, f32_slice(op, s2, l2)?))
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

    /// The fused attention against the same attention in candle's ops, on a batch whose second
    /// sentence is padded: real rows agree, padded rows are zeros.
    #[test]
    fn fused_attention_matches_candles_ops_on_real_tokens() -> candle_core::Result<()> {
        let (batch, len, heads, size) = (2, 7, 3, 12);
        let hidden = heads * size;
        let cpu = &Device::Cpu;
        let ramp = |n: usize, a: f64| Tensor::arange(0u32, n as u32, cpu)?.to_dtype(DType::F32)?.affine(a, 0.3)?.sin();
        let qkv = ramp(batch * len * 3 * hidden, 0.37)?.reshape((batch * len, 3 * hidden))?;
        let bias = ramp(3 * hidden, 0.11)?;
        let mask = Tensor::new(&[[1u32, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]], cpu)?;
        let fused = super::attention(&qkv, &bias, &mask, heads)?.expect("the CPU path");

        let with_bias = qkv.broadcast_add(&bias)?;
        let split = |t: Tensor| t.reshape((batch, len, heads, size))?.transpose(1, 2)?.contiguous();
        let (q, k, v) = (
            split(with_bias.narrow(1, 0, hidden)?)?,
            split(with_bias.narrow(1, hidden, hidden)?)?,
            split(with_bias.narrow(1, 2 * hidden, hidden)?)?,
        );
        let additive = ((mask.to_dtype(DType::F32)? - 1.0)? * 1e9)?.reshape((batch, 1, 1, len))?;
        let probs = candle_nn::ops::softmax_last_dim(&q.matmul(&k.t()?)?.broadcast_add(&additive)?)?;
        let reference = probs.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((batch * len, hidden))?;
        let rows = |t: &Tensor, from: usize, n: usize| t.narrow(0, from, n);
        for (from, n) in [(0, 7), (7, 4)] {
            let diff = (rows(&fused, from, n)? - rows(&reference, from, n)?)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-5, "rows {from}..{}: the fused attention differs by {diff}", from + n);
        }
        assert_eq!(rows(&fused, 11, 3)?.abs()?.max_all()?.to_scalar::<f32>()?, 0.0, "padded rows are zeros");
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
