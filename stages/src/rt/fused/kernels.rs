//! The numeric kernels of the fused CPU relational transformer: matrix products through
//! `matrixmultiply`, LayerNorm, and the activations with their derivatives.
//!
//! The transcendental functions are branch-free polynomial approximations (relative error
//! around 1e-7) so that loops over feature rows vectorize; they run on every one of the N²
//! pair features of every layer, where a libm call per element would dominate.

/// Compiles a kernel twice, for the baseline target and with AVX2 + FMA, and picks the
/// wide one at run time when the CPU has it. Rust never contracts `a·b + c` into an FMA
/// nor reorders float sums on its own, so both versions give bit-identical results; only
/// the vector width differs.
macro_rules! with_avx2 {
    ($(#[$meta:meta])* pub fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        pub fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn wide($($arg: $ty),*) {
                    body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has the features `wide` was compiled for.
                    return unsafe { wide($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

/// `c ← a·b (+ c if accumulate)` with `a` `[m, k]` and `b` `[k, n]`, all row-major;
/// `a_t`/`b_t` say that the stored matrix is the transpose (`[k, m]` / `[n, k]`).
#[allow(clippy::too_many_arguments)]
pub fn gemm(m: usize, k: usize, n: usize, a: &[f32], a_t: bool, b: &[f32], b_t: bool, c: &mut [f32], accumulate: bool) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n, "gemm operand too small");
    if m == 0 || n == 0 {
        return;
    }
    let (rsa, csa) = if a_t { (1, m as isize) } else { (k as isize, 1) };
    let (rsb, csb) = if b_t { (1, k as isize) } else { (n as isize, 1) };
    let beta = if accumulate { 1.0 } else { 0.0 };
    // SAFETY: the asserts above bound every index the strides can reach.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa,
            csa,
            b.as_ptr(),
            rsb,
            csb,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// Adds `bias` to every row of `y` (`[rows, bias.len()]`).
pub fn add_bias(y: &mut [f32], bias: &[f32]) {
    for row in y.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}

/// `out += Σ_rows x` (column sums of `[rows, out.len()]`).
pub fn add_column_sums(out: &mut [f32], x: &[f32]) {
    for row in x.chunks_exact(out.len()) {
        for (o, v) in out.iter_mut().zip(row) {
            *o += v;
        }
    }
}

/// `e^x` for f32, Cephes-style range reduction and a degree-6 polynomial.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // `if`-free bounds (no NaN handling needed: inputs are finite activations).
    let x = if x < -87.0 { -87.0 } else { x };
    let x = if x > 88.0 { 88.0 } else { x };
    // Round to nearest with the 1.5·2^23 trick, which vectorizes (floor() would not).
    const SHIFT: f32 = 12_582_912.0;
    let k = (x * std::f32::consts::LOG2_E + SHIFT) - SHIFT;
    let r = x - k * 0.693_359_4 - k * -2.121_944_4e-4;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 5e-1;
    let y = p * r * r + r + 1.0;
    // SAFETY: |k| ≤ 127 after the bounds above, so the conversion cannot overflow (and,
    // unlike the saturating `as`, it vectorizes).
    let k = unsafe { k.to_int_unchecked::<i32>() };
    y * f32::from_bits((k.wrapping_add(127) << 23) as u32)
}

const INV_SQRT_2PI: f32 = 0.398_942_3;

/// `(Φ(x), φ(x))`: the standard normal CDF, via Abramowitz–Stegun 7.1.26 for erf
/// (absolute error below 1.5e-7), and the density, sharing one `exp(−x²/2)`.
/// Branch-free (`copysign`, not `if`) so loops over it vectorize.
#[inline(always)]
pub fn normal_cdf_pdf(x: f32) -> (f32, f32) {
    let z = x * std::f32::consts::FRAC_1_SQRT_2;
    let a = z.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_8) * t - 0.284_496_72) * t + 0.254_829_6) * t;
    let gauss = exp(-a * a);
    let erf = (1.0 - poly * gauss).copysign(z);
    (0.5 * (1.0 + erf), INV_SQRT_2PI * gauss)
}

#[inline(always)]
pub fn normal_cdf(x: f32) -> f32 {
    normal_cdf_pdf(x).0
}

with_avx2! {
/// Exact (erf) GELU, `x·Φ(x)`, written over a slice.
pub fn gelu(x: &[f32], out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = v * normal_cdf(v);
    }
}
}

with_avx2! {
/// GELU and its derivative `GELU'(x) = Φ(x) + x·φ(x)` in one pass (the backward pass needs
/// both: the output for the weight gradient, the derivative for the input gradient).
pub fn gelu_with_derivative(x: &[f32], out: &mut [f32], derivative: &mut [f32]) {
    for ((o, dv), &v) in out.iter_mut().zip(derivative.iter_mut()).zip(x) {
        let (cdf, pdf) = normal_cdf_pdf(v);
        *o = v * cdf;
        *dv = cdf + v * pdf;
    }
}
}

with_avx2! {
/// `grad ⊙ GELU'(x)`, in place on `grad`.
pub fn gelu_backward(x: &[f32], grad: &mut [f32]) {
    for (g, &v) in grad.iter_mut().zip(x) {
        let (cdf, pdf) = normal_cdf_pdf(v);
        *g *= cdf + v * pdf;
    }
}
}

/// `a += b`.
pub fn add_in_place(a: &mut [f32], b: &[f32]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

/// `a ⊙= b`.
pub fn multiply_in_place(a: &mut [f32], b: &[f32]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x *= y;
    }
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

pub fn silu(x: &[f32], out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = v * sigmoid(v);
    }
}

/// `grad ⊙ SiLU'(x)`, `SiLU'(x) = σ(x)(1 + x(1 − σ(x)))`.
pub fn silu_backward(x: &[f32], grad: &mut [f32]) {
    for (g, &v) in grad.iter_mut().zip(x) {
        let s = sigmoid(v);
        *g *= s * (1.0 + v * (1.0 - s));
    }
}

pub fn relu(x: &[f32], out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = v.max(0.0);
    }
}

pub fn relu_backward(x: &[f32], grad: &mut [f32]) {
    for (g, &v) in grad.iter_mut().zip(x) {
        if v <= 0.0 {
            *g = 0.0;
        }
    }
}

pub const LN_EPS: f32 = 1e-5;

/// LayerNorm over rows of width `gamma.len()`: writes `y`, and the normalized input
/// `xhat` and `1/σ` per row that the backward pass needs.
pub fn layer_norm(x: &[f32], gamma: &[f32], beta: &[f32], y: &mut [f32], xhat: &mut [f32], rstd: &mut [f32]) {
    let w = gamma.len();
    for (((row, out), hat), r) in x.chunks_exact(w).zip(y.chunks_exact_mut(w)).zip(xhat.chunks_exact_mut(w)).zip(rstd) {
        let mean = row.iter().sum::<f32>() / w as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / w as f32;
        let inv = 1.0 / (var + LN_EPS).sqrt();
        *r = inv;
        for c in 0..w {
            let h = (row[c] - mean) * inv;
            hat[c] = h;
            out[c] = h * gamma[c] + beta[c];
        }
    }
}

/// `y = xhat·γ + β`, recomputing a LayerNorm output from its saved `xhat`.
pub fn layer_norm_output(xhat: &[f32], gamma: &[f32], beta: &[f32], y: &mut [f32]) {
    let w = gamma.len();
    for (hat, out) in xhat.chunks_exact(w).zip(y.chunks_exact_mut(w)) {
        for c in 0..w {
            out[c] = hat[c] * gamma[c] + beta[c];
        }
    }
}

/// LayerNorm backward: `dx = rstd·(dx̂ − mean(dx̂) − x̂·mean(dx̂⊙x̂))` with `dx̂ = dy⊙γ`;
/// accumulates `dγ`, `dβ`. Overwrites `dx`.
pub fn layer_norm_backward(
    dy: &[f32],
    xhat: &[f32],
    rstd: &[f32],
    gamma: &[f32],
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    let w = gamma.len();
    for (((g, hat), out), &r) in dy.chunks_exact(w).zip(xhat.chunks_exact(w)).zip(dx.chunks_exact_mut(w)).zip(rstd) {
        let mut mean_d = 0.0;
        let mut mean_dh = 0.0;
        for c in 0..w {
            dgamma[c] += g[c] * hat[c];
            dbeta[c] += g[c];
            let dh = g[c] * gamma[c];
            mean_d += dh;
            mean_dh += dh * hat[c];
        }
        mean_d /= w as f32;
        mean_dh /= w as f32;
        for c in 0..w {
            out[c] = r * (g[c] * gamma[c] - mean_d - hat[c] * mean_dh);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_cdf_are_accurate() {
        for i in -400..=400 {
            let x = i as f32 * 0.05;
            let want = (x as f64).exp();
            assert!(((exp(x) as f64 - want) / want).abs() < 3e-7, "exp({x})");
            // the series reference is only accurate for moderate arguments
            let cdf = if x.abs() < 5.5 {
                0.5 * (1.0 + erf64(x as f64 / std::f64::consts::SQRT_2))
            } else {
                f64::from(x > 0.0)
            };
            assert!((normal_cdf(x) as f64 - cdf).abs() < 3e-7, "cdf({x})");
        }
    }

    /// erf by its Taylor series (slow, exact enough for |x| ≤ 15).
    fn erf64(x: f64) -> f64 {
        let mut sum = 0.0f64;
        let mut term = x;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs().max(1e-300) || n < 5.0 {
            sum += term / (2.0 * n + 1.0);
            n += 1.0;
            term *= -x * x / n;
            if n > 400.0 {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn activation_derivatives_match_finite_differences() {
        let h = 1e-2f32;
        for i in -30..=30 {
            let x = i as f32 * 0.2 + 0.013;
            for (f, df) in [
                (gelu as fn(&[f32], &mut [f32]), gelu_backward as fn(&[f32], &mut [f32])),
                (silu, silu_backward),
            ] {
                let (mut up, mut down) = ([0.0], [0.0]);
                f(&[x + h], &mut up);
                f(&[x - h], &mut down);
                let numeric = (up[0] - down[0]) / (2.0 * h);
                let mut g = [1.0];
                df(&[x], &mut g);
                assert!((g[0] - numeric).abs() < 1e-3, "x={x}: {} vs {numeric}", g[0]);
            }
            let (mut value, mut slope, mut plain, mut grad) = ([0.0], [0.0], [0.0], [1.0]);
            gelu_with_derivative(&[x], &mut value, &mut slope);
            gelu(&[x], &mut plain);
            gelu_backward(&[x], &mut grad);
            assert_eq!((value, slope), (plain, grad));
        }
    }

    #[test]
    fn gemm_transposes_agree_with_a_naive_product() {
        let (m, k, n) = (5, 3, 4);
        let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 3.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32).sin()).collect();
        let naive: Vec<f32> =
            (0..m * n).map(|ij| (0..k).map(|p| a[(ij / n) * k + p] * b[p * n + ij % n]).sum()).collect();
        let at: Vec<f32> = (0..k * m).map(|pi| a[(pi % m) * k + pi / m]).collect();
        let bt: Vec<f32> = (0..n * k).map(|jp| b[(jp % k) * n + jp / k]).collect();
        for (aa, a_t, bb, b_t) in [(&a, false, &b, false), (&at, true, &b, false), (&a, false, &bt, true), (&at, true, &bt, true)] {
            let mut c = vec![1.0; m * n];
            gemm(m, k, n, aa, a_t, bb, b_t, &mut c, true);
            for (x, y) in c.iter().zip(&naive) {
                assert!((x - y - 1.0).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn layer_norm_backward_matches_finite_differences() {
        let w = 5;
        let x: Vec<f32> = (0..2 * w).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.3).collect();
        let gamma: Vec<f32> = (0..w).map(|i| 1.0 + 0.1 * i as f32).collect();
        let beta = vec![0.2; w];
        let weights: Vec<f32> = (0..2 * w).map(|i| (i as f32 * 0.7).cos()).collect();
        let loss = |x: &[f32]| -> f32 {
            let (mut y, mut hat, mut r) = (vec![0.0; 2 * w], vec![0.0; 2 * w], vec![0.0; 2]);
            layer_norm(x, &gamma, &beta, &mut y, &mut hat, &mut r);
            y.iter().zip(&weights).map(|(a, b)| a * b).sum()
        };
        let (mut y, mut hat, mut r) = (vec![0.0; 2 * w], vec![0.0; 2 * w], vec![0.0; 2]);
        layer_norm(&x, &gamma, &beta, &mut y, &mut hat, &mut r);
        let (mut dx, mut dg, mut db) = (vec![0.0; 2 * w], vec![0.0; w], vec![0.0; w]);
        layer_norm_backward(&weights, &hat, &r, &gamma, &mut dx, &mut dg, &mut db);
        for i in 0..2 * w {
            let (mut up, mut down) = (x.clone(), x.clone());
            up[i] += 1e-2;
            down[i] -= 1e-2;
            let numeric = (loss(&up) - loss(&down)) / 2e-2;
            assert!((dx[i] - numeric).abs() < 2e-3, "{i}: {} vs {numeric}", dx[i]);
        }
    }
}
