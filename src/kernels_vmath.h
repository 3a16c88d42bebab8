/* Vector float math shared by the avx2 and avx512 paths: exp, expm1, log1p and the ONNX
 * activations built on them.
 *
 * Why one text for both: the two paths must give bitwise identical results, so they must run
 * the same float operations in the same order. Each ISA file defines a thin layer first
 * (types vf/vi/vmask and the inline functions used below, with x86 semantics: vmin(a, b) and
 * vmax(a, b) return b when either is NaN; vfma is one rounding), then includes this file.
 * Nothing here may use an operation whose result differs between the two ISAs (no rcp/rsqrt
 * estimates, no getexp/getmant, no reduced-precision tricks), and the build must not contract
 * a*b+c on its own (-ffp-contract=off).
 *
 * Accuracy (measured by tests/check_kernels.c against float64): see docs/kernels.md. */
#ifndef RNND_KERNELS_VMATH_H
#define RNND_KERNELS_VMATH_H

#define VM_SIGN_MASK 0x80000000u

static inline vf vm_abs(vf x) { return vandnot(vset1(-0.0f), x); }
static inline vf vm_sign(vf x) { return vand(vset1(-0.0f), x); }

/* Clamp to [lo, hi] keeping NaN (x is the second operand of min/max). */
static inline vf vm_clamp(vf x, float lo, float hi) { return vmax(vset1(lo), vmin(vset1(hi), x)); }

/* 2^n for integer lanes -126 <= n <= 127. */
static inline vf vm_pow2i(vi n) { return vcastf(vislli23(viadd(n, viset1(127)))); }

/* Split x into n*ln2 + r with |r| <= ln2/2, n an integer (|x| < 2^22). Returns r, sets *n. */
static inline vf vm_reduce_ln2(vf x, vi *n)
{
    const vf magic = vset1(12582912.0f);                /* 1.5 * 2^23 */
    vf t = vfma(x, vset1(1.44269504088896341f), magic); /* round(x/ln2) in the low bits */
    vf nf = vsub(t, magic);
    *n = visub(vcasti(t), vcasti(magic));
    vf r = vfma(nf, vset1(-0.693359375f), x); /* Cody-Waite: ln2 = C1 + C2 */
    return vfma(nf, vset1(2.12194440e-4f), r);
}

/* e^r - 1 for |r| <= ln2/2: r + r^2 * P(r), Cephes expf coefficients. */
static inline vf vm_expm1_reduced(vf r)
{
    vf p = vset1(1.9875691500e-4f);
    p = vfma(p, r, vset1(1.3981999507e-3f));
    p = vfma(p, r, vset1(8.3334519073e-3f));
    p = vfma(p, r, vset1(4.1665795894e-2f));
    p = vfma(p, r, vset1(1.6666665459e-1f));
    p = vfma(p, r, vset1(5.0000001201e-1f));
    return vfma(p, vmul(r, r), r);
}

/* e^x for every float: +inf -> +inf, -inf -> 0, NaN -> NaN, subnormal results kept. */
static inline vf vm_exp(vf x)
{
    vi n;
    x = vm_clamp(x, -104.0f, 89.0f); /* beyond these the result is 0 or inf anyway */
    vf r = vm_reduce_ln2(x, &n);
    vf y = vadd(vm_expm1_reduced(r), vset1(1.0f));
    /* Scale in two exact-exponent steps: n is in [-150, 129], outside one float's range. */
    vi n1 = visrai1(n);
    vi n2 = visub(n, n1);
    return vmul(vmul(y, vm_pow2i(n1)), vm_pow2i(n2));
}

/* e^x - 1 for -30 <= x <= 88 (and NaN); accurate near 0, unlike exp(x) - 1. */
static inline vf vm_expm1_dom(vf x)
{
    vi n;
    vf r = vm_reduce_ln2(x, &n);
    vf y = vm_expm1_reduced(r);
    vf s = vm_pow2i(n);
    /* e^x - 1 = 2^n (e^r - 1) + (2^n - 1); both terms exact or nearly so. */
    return vfma(y, s, vsub(s, vset1(1.0f)));
}

/* log(1 + u) for 0 <= u <= 1 (and NaN). */
static inline vf vm_log1p01(vf u)
{
    const vf one = vset1(1.0f);
    vf w = vadd(one, u);
    /* Reduce w to m in [sqrt(1/2), sqrt(2)): w in [1, 2], so halve it when >= sqrt(2). */
    vmask big = vge(w, vset1(1.41421356237f));
    vf m = vsel(big, vmul(w, vset1(0.5f)), w);
    vf e = vsel(big, one, vset1(0.0f));
    vf f = vsub(m, one); /* exact (Sterbenz) */
    /* What rounding 1 + u lost, to first order: log(1+u) = log(w) + (u - (w-1)) / w. */
    vf c = vdiv(vsub(u, vsub(w, one)), w);
    vf z = vmul(f, f);
    vf p = vset1(7.0376836292e-2f); /* Cephes logf */
    p = vfma(p, f, vset1(-1.1514610310e-1f));
    p = vfma(p, f, vset1(1.1676998740e-1f));
    p = vfma(p, f, vset1(-1.2420140846e-1f));
    p = vfma(p, f, vset1(1.4249322787e-1f));
    p = vfma(p, f, vset1(-1.6668057665e-1f));
    p = vfma(p, f, vset1(2.0000714765e-1f));
    p = vfma(p, f, vset1(-2.4999993993e-1f));
    p = vfma(p, f, vset1(3.3333331174e-1f));
    vf y = vmul(vmul(p, f), z);
    y = vfma(e, vset1(-2.12194440e-4f), y);
    y = vfma(z, vset1(-0.5f), y);
    y = vadd(y, c);
    vf r = vadd(f, y);
    return vfma(e, vset1(0.693359375f), r);
}

/* ---- the activations -------------------------------------------------------------------- */

static inline vf vm_sigmoid(vf x)
{
    /* e = e^-|x| never overflows; for x < 0 the result is e/(1+e), which keeps tiny values. */
    vf e = vm_exp(vsub(vset1(0.0f), vm_abs(x)));
    vf num = vsel(vlt(x, vset1(0.0f)), e, vset1(1.0f));
    return vdiv(num, vadd(vset1(1.0f), e));
}

static inline vf vm_tanh(vf x)
{
    /* tanh|x| = t / (t + 2) with t = expm1(2|x|); tanh rounds to 1 beyond |x| = 9.1. */
    vf a = vmin(vset1(10.0f), vm_abs(x));
    vf t = vm_expm1_dom(vadd(a, a));
    return vor(vdiv(t, vadd(t, vset1(2.0f))), vm_sign(x));
}

static inline vf vm_relu(vf x) { return vmax(vset1(0.0f), x); }

static inline vf vm_hardsigmoid(vf x, vf alpha, vf beta)
{
    vf v = vadd(vmul(alpha, x), beta);
    return vmin(vset1(1.0f), vmax(vset1(0.0f), v));
}

static inline vf vm_leakyrelu(vf x, vf alpha)
{
    return vsel(vge(x, vset1(0.0f)), x, vmul(alpha, x));
}

static inline vf vm_thresholdedrelu(vf x, vf alpha)
{
    return vsel(vgt_or_nan(x, alpha), x, vset1(0.0f));
}

static inline vf vm_elu(vf x, vf alpha)
{
    /* expm1 rounds to -1 below -17; clamping to the helper's domain changes nothing. */
    vf em = vmul(alpha, vm_expm1_dom(vm_clamp(x, -30.0f, 0.0f)));
    return vsel(vge(x, vset1(0.0f)), x, em);
}

static inline vf vm_softsign(vf x)
{
    /* Past 2^100 the result is +-1; the clamp only keeps inf/inf from making NaN. */
    vf c = vm_clamp(x, -0x1p100f, 0x1p100f);
    return vdiv(c, vadd(vset1(1.0f), vm_abs(c)));
}

static inline vf vm_softplus(vf x)
{
    /* log(1 + e^x) = max(x, 0) + log1p(e^-|x|) */
    vf e = vm_exp(vsub(vset1(0.0f), vm_abs(x)));
    return vadd(vmax(vset1(0.0f), x), vm_log1p01(e));
}

#endif
