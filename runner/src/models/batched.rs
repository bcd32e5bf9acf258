//! A batch-invariant linear layer for the CPU decode step (issue 24): `out = x · wᵀ (+ bias)` for
//! a batch of rows, where each output is computed by exactly the same floating-point operations
//! whatever the batch holds. A stream's logits are then bitwise equal alone and inside a batch of
//! sixteen, so tenants sharing a step never change each other's tokens.
//!
//! How the invariance is kept, by construction:
//! - every `out[r][j]` is one [`dot`] of `x[r]` and `w[j]`, in the SIMD the CPU has (chosen
//!   at run time, the same for every call on a machine): the vector chunks of `k` taken in
//!   turn by [`ACCUMULATORS`] accumulators, folded by a fixed tree, then the scalar tail of `k`
//!   in order, then the bias. Nothing in it depends on `rows` or on where the row is;
//! - a row's dot product is the same function call whatever other rows there are (compilers
//!   may not reassociate floating-point sums);
//! - the work is split over output columns, in fixed chunks of [`COLS_PER_TASK`]: that decides
//!   who computes a dot product, never its order.
//!
//! Memory: a decode step is bound by reading the weights, so they are the outer loop; each
//! weight row is read (and converted, for half-precision weights) once per step and applied to
//! every row of the batch.

use rayon::prelude::*;

/// Independent vector accumulators of a dot product (enough to hide the add latency).
const ACCUMULATORS: usize = 4;
/// Output columns one rayon task computes.
const COLS_PER_TASK: usize = 32;

/// A layer's weight, `n` rows of `k` (the `Linear` layout of PyTorch and candle).
#[derive(Debug, Clone, Copy)]
pub enum Weight<'a> {
    F32(&'a [f32]),
    /// bf16 values by their bits; widened to f32 exactly, as each row is read.
    Bf16(&'a [u16]),
    /// f16 values by their bits; widened to f32 exactly, as each row is read.
    F16(&'a [u16]),
}

impl Weight<'_> {
    fn len(&self) -> usize {
        match self {
            Weight::F32(w) => w.len(),
            Weight::Bf16(w) | Weight::F16(w) => w.len(),
        }
    }
}

/// A slice whose length does not fit the layer; nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinearError {
    #[error("the linear layer's {what} has {actual} values; {expected} were expected")]
    Length { what: &'static str, expected: usize, actual: usize },
    #[error("the linear layer's {what} overflows ({a} × {b})")]
    Overflow { what: &'static str, a: usize, b: usize },
}

/// `out = x · wᵀ + bias` over `n` outputs of `k` inputs each.
#[derive(Debug, Clone, Copy)]
pub struct BatchLinear<'a> {
    weight: Weight<'a>,
    bias: Option<&'a [f32]>,
    n: usize,
    k: usize,
}

impl<'a> BatchLinear<'a> {
    /// `weight` holds `n` rows of `k`; `bias`, when given, `n` values.
    pub fn new(weight: Weight<'a>, bias: Option<&'a [f32]>, n: usize, k: usize) -> Result<Self, LinearError> {
        check_len("weight", weight.len(), n, k)?;
        if let Some(bias) = bias {
            check_len("bias", bias.len(), n, 1)?;
        }
        Ok(Self { weight, bias, n, k })
    }

    /// `out` (rows × n) from `x` (rows × k), both row-major. Row `r` of `out` is bitwise the
    /// same whatever `rows` is and wherever the row sits in `x`.
    pub fn forward(&self, x: &[f32], rows: usize, out: &mut [f32]) -> Result<(), LinearError> {
        let (n, k) = (self.n, self.k);
        check_len("input", x.len(), rows, k)?;
        check_len("output", out.len(), rows, n)?;
        if rows == 0 || n == 0 {
            return Ok(());
        }
        // Column-major results (n × rows), so that each task owns a contiguous piece.
        let mut by_column = vec![0f32; out.len()];
        by_column.par_chunks_mut(COLS_PER_TASK * rows).enumerate().for_each_init(
            || vec![0f32; k],
            |widened, (task, columns)| {
                let first = task * COLS_PER_TASK;
                for (c, column) in columns.chunks_exact_mut(rows).enumerate() {
                    let j = first + c;
                    let w = self.weight_row(j, widened);
                    let bias = self.bias.map_or(0.0, |b| b[j]);
                    dots_into(w, x, k, bias, column);
                }
            },
        );
        for (r, out_row) in out.chunks_exact_mut(n).enumerate() {
            for (j, o) in out_row.iter_mut().enumerate() {
                *o = by_column[j * rows + r];
            }
        }
        Ok(())
    }

    /// Weight row `j` as f32: borrowed, or widened into `widened` (exact for bf16 and f16).
    fn weight_row<'s>(&'s self, j: usize, widened: &'s mut [f32]) -> &'s [f32] {
        let k = self.k;
        match self.weight {
            Weight::F32(w) => &w[j * k..(j + 1) * k],
            Weight::Bf16(w) => {
                for (f, &bits) in widened.iter_mut().zip(&w[j * k..(j + 1) * k]) {
                    *f = f32::from_bits(u32::from(bits) << 16);
                }
                widened
            }
            Weight::F16(w) => {
                // half widens with F16C where the CPU has it (runtime detection).
                half::slice::HalfFloatSliceExt::convert_to_f32_slice(
                    half::slice::HalfBitsSliceExt::reinterpret_cast::<half::f16>(&w[j * k..(j + 1) * k]),
                    widened,
                );
                widened
            }
        }
    }
}

/// `out = x · wᵀ` for f32 weights without bias: [`BatchLinear`] in one call.
pub fn linear_rows(x: &[f32], rows: usize, k: usize, w: &[f32], n: usize, out: &mut [f32]) -> Result<(), LinearError> {
    BatchLinear::new(Weight::F32(w), None, n, k)?.forward(x, rows, out)
}

fn check_len(what: &'static str, actual: usize, a: usize, b: usize) -> Result<(), LinearError> {
    let expected = a.checked_mul(b).ok_or(LinearError::Overflow { what, a, b })?;
    if actual == expected { Ok(()) } else { Err(LinearError::Length { what, expected, actual }) }
}

/// `column[r] = dot(x[r], w) + bias` for every row `r` of `x` (rows of `k`), in the widest SIMD
/// the CPU has (pulp picks it at run time: AVX-512, AVX2+FMA, else SSE2). `w` stays in L1 while
/// the rows pass over it. (Sharing each loaded chunk of `w` among several rows measured slower:
/// their accumulators no longer fit the registers.)
fn dots_into(w: &[f32], x: &[f32], k: usize, bias: f32, column: &mut [f32]) {
    if k == 0 {
        column.fill(bias);
        return;
    }
    pulp::Arch::new().dispatch(Dots { w, x, k, bias, column });
}

struct Dots<'a> {
    w: &'a [f32],
    x: &'a [f32],
    k: usize,
    bias: f32,
    column: &'a mut [f32],
}

impl pulp::WithSimd for Dots<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        for (row, o) in self.x.chunks_exact(self.k).zip(self.column) {
            *o = dot(simd, self.w, row) + self.bias;
        }
    }
}

/// The dot product of `w` and `x` (of the same length), always in the same operations for a
/// given CPU: [`ACCUMULATORS`] vector accumulators take the SIMD chunks in turn (fused
/// multiply-add), leftover chunks go to the first, the accumulators are folded pairwise and
/// summed across lanes, then the scalar tail is added in order. Nothing depends on the batch.
#[inline(always)]
fn dot<S: pulp::Simd>(simd: S, w: &[f32], x: &[f32]) -> f32 {
    let (w_head, w_tail) = S::as_simd_f32s(w);
    let (x_head, x_tail) = S::as_simd_f32s(x);
    let mut acc = [simd.splat_f32s(0.0); ACCUMULATORS];
    let mut w_chunks = w_head.chunks_exact(ACCUMULATORS);
    let mut x_chunks = x_head.chunks_exact(ACCUMULATORS);
    for (w, x) in (&mut w_chunks).zip(&mut x_chunks) {
        for a in 0..ACCUMULATORS {
            acc[a] = simd.mul_add_e_f32s(w[a], x[a], acc[a]);
        }
    }
    for (w, x) in w_chunks.remainder().iter().zip(x_chunks.remainder()) {
        acc[0] = simd.mul_add_e_f32s(*w, *x, acc[0]);
    }
    let folded = simd.add_f32s(simd.add_f32s(acc[0], acc[1]), simd.add_f32s(acc[2], acc[3]));
    let mut sum = simd.reduce_sum_f32s(folded);
    for (w, x) in w_tail.iter().zip(x_tail) {
        sum = w.mul_add(*x, sum);
    }
    sum
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::{BatchLinear, LinearError, Weight, linear_rows};
    use crate::test_rng::Rng;

    fn values(rng: &mut Rng, len: usize) -> Vec<f32> {
        (0..len).map(|_| rng.signed_unit()).collect()
    }

    /// A batch of `rows` random rows with `row` at `at`.
    fn batch_with(rng: &mut Rng, row: &[f32], rows: usize, at: usize) -> Vec<f32> {
        let k = row.len();
        let mut x = values(rng, rows * k);
        x[at * k..(at + 1) * k].copy_from_slice(row);
        x
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|v| v.to_bits()).collect()
    }

    /// Each row's outputs computed alone are bitwise those of the same row inside batches of
    /// 2, 7 and 16 at the front, the back and in between; k is not a multiple of the lanes and
    /// n not a multiple of the columns per task.
    #[test]
    fn batched_rows_are_bitwise_equal_to_rows_alone() -> Result<(), LinearError> {
        let mut rng = Rng(24);
        for (k, n) in [(1000, 77), (37, 33), (16, 1), (5, 64)] {
            let w = values(&mut rng, n * k);
            let bias = values(&mut rng, n);
            for layer in
                [BatchLinear::new(Weight::F32(&w), None, n, k)?, BatchLinear::new(Weight::F32(&w), Some(&bias), n, k)?]
            {
                for _ in 0..3 {
                    let row = values(&mut rng, k);
                    let mut alone = vec![0f32; n];
                    layer.forward(&row, 1, &mut alone)?;
                    for rows in [2, 7, 16] {
                        for at in [0, rows / 2, rows - 1] {
                            let x = batch_with(&mut rng, &row, rows, at);
                            let mut out = vec![0f32; rows * n];
                            layer.forward(&x, rows, &mut out)?;
                            assert_eq!(
                                bits(&out[at * n..(at + 1) * n]),
                                bits(&alone),
                                "k {k}, n {n}: row {at} of {rows} differs from the row alone"
                            );
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Within 1e-5 of candle's matmul, relative to the sum of |products| (the scale of the
    /// rounding error of any summation order).
    #[test]
    fn batched_linear_matches_candles_matmul() -> Result<(), Box<dyn std::error::Error>> {
        let mut rng = Rng(7);
        for (rows, k, n) in [(1, 512, 1408), (16, 1408, 512), (7, 1000, 77), (3, 5, 2)] {
            let (x, w, bias) = (values(&mut rng, rows * k), values(&mut rng, n * k), values(&mut rng, n));
            let mut out = vec![0f32; rows * n];
            BatchLinear::new(Weight::F32(&w), Some(&bias), n, k)?.forward(&x, rows, &mut out)?;
            let xt = Tensor::from_slice(&x, (rows, k), &Device::Cpu)?;
            let wt = Tensor::from_slice(&w, (n, k), &Device::Cpu)?;
            let bt = Tensor::from_slice(&bias, n, &Device::Cpu)?;
            let reference: Vec<f32> = xt.matmul(&wt.t()?)?.broadcast_add(&bt)?.flatten_all()?.to_vec1()?;
            let abs = xt.abs()?.matmul(&wt.abs()?.t()?)?.broadcast_add(&bt.abs()?)?.flatten_all()?.to_vec1::<f32>()?;
            for (i, ((o, r), a)) in out.iter().zip(&reference).zip(&abs).enumerate() {
                assert!((o - r).abs() <= 1e-5 * a, "rows {rows}, k {k}, n {n}: output {i} is {o}, candle's {r}");
            }
        }
        Ok(())
    }

    /// bf16 and f16 weights give bitwise what their exact f32 widening gives, and stay batch
    /// invariant.
    #[test]
    fn batched_half_weights_equal_their_f32_widening() -> Result<(), LinearError> {
        use half::{bf16, f16};
        let mut rng = Rng(16);
        let (k, n, rows) = (300, 45, 7);
        let w = values(&mut rng, n * k);
        let x = values(&mut rng, rows * k);
        let bf: Vec<u16> = w.iter().map(|&v| bf16::from_f32(v).to_bits()).collect();
        let hf: Vec<u16> = w.iter().map(|&v| f16::from_f32(v).to_bits()).collect();
        let bf_wide: Vec<f32> = bf.iter().map(|&b| bf16::from_bits(b).to_f32()).collect();
        let hf_wide: Vec<f32> = hf.iter().map(|&b| f16::from_bits(b).to_f32()).collect();
        for (half, wide) in [(Weight::Bf16(&bf), &bf_wide), (Weight::F16(&hf), &hf_wide)] {
            let (mut got, mut want) = (vec![0f32; rows * n], vec![0f32; rows * n]);
            BatchLinear::new(half, None, n, k)?.forward(&x, rows, &mut got)?;
            linear_rows(&x, rows, k, wide, n, &mut want)?;
            assert_eq!(bits(&got), bits(&want), "{half:?} against its widening");
            let mut alone = vec![0f32; n];
            BatchLinear::new(half, None, n, k)?.forward(&x[3 * k..4 * k], 1, &mut alone)?;
            assert_eq!(bits(&got[3 * n..4 * n]), bits(&alone), "a half-weight row alone");
        }
        Ok(())
    }

    /// candle's CPU `QMatMul` over Q8_0 quantizes each row of `x` on its own and takes each
    /// output as one block-wise dot product: a row comes out bitwise the same alone or in a
    /// batch, so a GGUF model's batched step may use it as it is (it is also 4-6x faster than
    /// dequantizing each weight row to f32 for this kernel, measured). This keeps that true
    /// across candle upgrades.
    #[test]
    fn batched_candles_q8_0_matmul_is_batch_invariant_on_the_cpu() -> Result<(), candle_core::Error> {
        use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
        let mut rng = Rng(24);
        let (k, n, rows) = (256, 96, 16);
        let w = Tensor::from_vec(values(&mut rng, n * k), (n, k), &Device::Cpu)?;
        let matmul = QMatMul::from_qtensor(QTensor::quantize(&w, GgmlDType::Q8_0)?)?;
        let x = Tensor::from_vec(values(&mut rng, rows * k), (rows, k), &Device::Cpu)?;
        let batch: Vec<f32> = candle_core::Module::forward(&matmul, &x)?.flatten_all()?.to_vec1()?;
        for r in [0, 5, 15] {
            let alone: Vec<f32> =
                candle_core::Module::forward(&matmul, &x.narrow(0, r, 1)?)?.flatten_all()?.to_vec1()?;
            assert_eq!(bits(&batch[r * n..(r + 1) * n]), bits(&alone), "row {r} alone and in a batch of {rows}");
        }
        Ok(())
    }

    #[test]
    fn batched_linear_refuses_mismatched_sizes() {
        let (w, x) = (vec![0f32; 6], vec![0f32; 6]);
        let mut out = vec![0f32; 4];
        let length = |what, expected, actual| Err(LinearError::Length { what, expected, actual });
        assert_eq!(linear_rows(&x, 2, 3, &w[..5], 2, &mut out), length("weight", 6, 5));
        assert_eq!(linear_rows(&x[..5], 2, 3, &w, 2, &mut out), length("input", 6, 5));
        assert_eq!(linear_rows(&x, 2, 3, &w, 2, &mut out[..3]), length("output", 4, 3));
        assert_eq!(linear_rows(&x, 3, 3, &w, 2, &mut out), length("input", 9, 6));
        let bias = [0f32; 3];
        assert_eq!(BatchLinear::new(Weight::F32(&w), Some(&bias), 2, 3).map(|_| ()), length("bias", 2, 3));
        assert_eq!(
            linear_rows(&x, usize::MAX, 2, &w, 3, &mut out),
            Err(LinearError::Overflow { what: "input", a: usize::MAX, b: 2 })
        );
        assert_eq!(
            BatchLinear::new(Weight::Bf16(&[]), None, usize::MAX, 3).map(|_| ()),
            Err(LinearError::Overflow { what: "weight", a: usize::MAX, b: 3 })
        );
        assert_eq!(linear_rows(&[], 0, 3, &w, 2, &mut []), Ok(()), "an empty batch is no error");
        assert_eq!(linear_rows(&[], 4, 0, &[], 2, &mut [0.0; 8]), Ok(()), "k = 0 gives the bias");
    }

    /// Nanoseconds per layer of a decode step for 1, 4 and 16 rows, over enough distinct layers
    /// (about 128 MiB of f32 weights) that they come from memory as in a real model, with
    /// candle's matmul beside it. Run:
    /// `cargo test --release -p runner --lib -- --ignored batched_linear_timing --nocapture`.
    #[test]
    #[ignore = "a timing, not a check"]
    fn batched_linear_timing() -> Result<(), Box<dyn std::error::Error>> {
        type Timed = Result<(), Box<dyn std::error::Error>>;
        let mut rng = Rng(1);
        // The bench model's feed-forward layer (bench/gen_model.rs: width 512, 1408) and a square one.
        for (k, n) in [(512, 1408), (1024, 1024)] {
            let layers = (128 << 20) / (4 * k * n);
            let w: Vec<Vec<f32>> = (0..layers).map(|_| values(&mut rng, n * k)).collect();
            let bf: Vec<Vec<u16>> =
                w.iter().map(|w| w.iter().map(|&v| half::bf16::from_f32(v).to_bits()).collect()).collect();
            let wt = w.iter().map(|w| Tensor::from_slice(w, (n, k), &Device::Cpu)).collect::<Result<Vec<_>, _>>()?;
            let q8 = wt
                .iter()
                .map(|t| {
                    let q = candle_core::quantized::QTensor::quantize(t, candle_core::quantized::GgmlDType::Q8_0)?;
                    candle_core::quantized::QMatMul::from_qtensor(q)
                })
                .collect::<Result<Vec<_>, _>>()?;
            for rows in [1, 4, 16] {
                let x = values(&mut rng, rows * k);
                let xt = Tensor::from_slice(&x, (rows, k), &Device::Cpu)?;
                let mut out = vec![0f32; rows * n];
                let time = |layer: &mut dyn FnMut(usize) -> Timed| -> Result<u128, Box<dyn std::error::Error>> {
                    (0..layers).try_for_each(&mut *layer)?;
                    let started = std::time::Instant::now();
                    for _ in 0..5 {
                        (0..layers).try_for_each(&mut *layer)?;
                    }
                    Ok(started.elapsed().as_nanos() / (5 * layers as u128))
                };
                let f32_ns = time(&mut |i| Ok(linear_rows(&x, rows, k, &w[i], n, &mut out)?))?;
                let bf16_ns =
                    time(
                        &mut |i| Ok(BatchLinear::new(Weight::Bf16(&bf[i]), None, n, k)?.forward(&x, rows, &mut out)?),
                    )?;
                let candle_ns = time(&mut |i| {
                    let _product = xt.matmul(&wt[i].t()?)?;
                    Ok(())
                })?;
                let candle_q8_ns = time(&mut |i| {
                    let _product = candle_core::Module::forward(&q8[i], &xt)?;
                    Ok(())
                })?;
                println!(
                    "k {k} n {n} rows {rows:2} ({layers} layers): batched f32 {f32_ns:>8} ns/layer, bf16 {bf16_ns:>8}, \
                     candle f32 matmul {candle_ns:>8}, candle q8_0 {candle_q8_ns:>8}"
                );
            }
        }
        Ok(())
    }
}
