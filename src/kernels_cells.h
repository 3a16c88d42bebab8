/* The gate math of one LSTM (depth-gated too), GRU, minGRU / minLSTM or clockwork batch row,
 * shared by the avx2 and avx512 paths.
 *
 * Included by each ISA file after kernels_vmath.h; the ISA layer also defines VLEN (floats
 * per vector) and vld(p, n) / vst(p, v, n), which load and store n <= VLEN floats (zero
 * fill, nothing written past n). Why fused: the step's elementwise work was a dozen passes
 * over each row (add, clip, activation per gate, the c update, h), each a call or a loop of
 * baseline x86-64 code; here every vector of hidden units goes through all of it in
 * registers. The operations and their order are those of the scalar reference
 * (kern_lstm_row_scalar and kern_gru_* in kernels_scalar.c), one rounding each, so a hidden
 * unit's result does not depend on where it sits, on the row range, or on the path (the
 * activations aside, which differ from libm's by a few ulp as documented in rnnd/kernels.h). */
#ifndef RNND_KERNELS_CELLS_H
#define RNND_KERNELS_CELLS_H

static inline vf vm_act(const rnnd_activation *a, vf v)
{
    switch (a->kind) {
    case RNND_ACT_SIGMOID: return vm_sigmoid(v);
    case RNND_ACT_TANH: return vm_tanh(v);
    case RNND_ACT_RELU: return vm_relu(v);
    case RNND_ACT_HARDSIGMOID: return vm_hardsigmoid(v, vset1(a->alpha), vset1(a->beta));
    case RNND_ACT_LEAKYRELU: return vm_leakyrelu(v, vset1(a->alpha));
    case RNND_ACT_THRESHOLDEDRELU: return vm_thresholdedrelu(v, vset1(a->alpha));
    case RNND_ACT_SCALEDTANH: return vmul(vset1(a->alpha), vm_tanh(vmul(vset1(a->beta), v)));
    case RNND_ACT_AFFINE: return vadd(vmul(vset1(a->alpha), v), vset1(a->beta));
    case RNND_ACT_ELU: return vm_elu(v, vset1(a->alpha));
    case RNND_ACT_SOFTSIGN: return vm_softsign(v);
    case RNND_ACT_SOFTPLUS: return vm_softplus(v);
    default: return v;
    }
}

/* The clip of rnnd/kernels.h: x > c ? c : x < -c ? -c : x, NaN kept (vm_clamp). */
static inline vf vm_clip(int has_clip, float clip, vf x)
{
    return has_clip ? vm_clamp(x, -clip, clip) : x;
}

static void cells_lstm_row(const rnnd_lstm_math *m, const float *gx, const float *g,
                           const float *cp, const float *cl, float *cn, float *h, size_t j0,
                           size_t j1)
{
    const size_t H = m->H;
    const size_t oo = H, of = 2 * H, oc = m->forget_gate ? 3 * H : 2 * H;
    const float *P = m->P;
    const vf one = vset1(1.0f);
    for (size_t j = j0; j < j1; j += VLEN) {
        const size_t n = j1 - j < VLEN ? j1 - j : VLEN;
        const vf c = vld(cp + j, n);
        vf gi = vadd(vld(gx + j, n), vld(g + j, n));
        if (P)
            gi = vadd(gi, vmul(vld(P + j, n), c));
        gi = vm_act(m->af, vm_clip(m->has_clip, m->clip, gi));
        vf cc =
            vm_act(m->ag,
                   vm_clip(m->has_clip, m->clip, vadd(vld(gx + oc + j, n), vld(g + oc + j, n))));
        vf c_new;
        if (!m->forget_gate) {
            c_new = vadd(c, vmul(gi, cc));
        } else if (m->input_forget) {
            c_new = vadd(vmul(vsub(one, gi), c), vmul(gi, cc));
        } else {
            vf gf = vadd(vld(gx + of + j, n), vld(g + of + j, n));
            if (P)
                gf = vadd(gf, vmul(vld(P + 2 * H + j, n), c));
            gf = vm_act(m->af, vm_clip(m->has_clip, m->clip, gf));
            c_new = vadd(vmul(gf, c), vmul(gi, cc));
        }
        if (m->Dc) {
            const vf low = vld(cl + j, n);
            vf gd = vadd(vld(gx + oc + H + j, n), vmul(vld(m->Dc + j, n), c));
            gd = vadd(gd, vmul(vld(m->Dl + j, n), low));
            gd = vm_act(m->af, vm_clip(m->has_clip, m->clip, gd));
            c_new = vadd(c_new, vmul(gd, low));
        }
        vf go = vadd(vld(gx + oo + j, n), vld(g + oo + j, n));
        if (P)
            go = vadd(go, vmul(vld(P + H + j, n), c_new));
        go = vm_act(m->af, vm_clip(m->has_clip, m->clip, go));
        vst(cn + j, c_new, n);
        vst(h + j, vmul(go, vm_act(m->ah, c_new)), n);
    }
}

static void cells_gru_gates(const rnnd_gru_math *m, const float *gx, float *g, const float *hp,
                            float *t, size_t j0, size_t j1)
{
    const size_t H = m->H;
    for (size_t j = j0; j < j1; j += VLEN) {
        const size_t n = j1 - j < VLEN ? j1 - j : VLEN;
        vf z = vadd(vld(gx + j, n), vld(g + j, n));
        vf r = vadd(vld(gx + H + j, n), vld(g + H + j, n));
        z = vm_act(m->af, vm_clip(m->has_clip, m->clip, z));
        r = vm_act(m->af, vm_clip(m->has_clip, m->clip, r));
        vst(g + j, z, n);
        vst(g + H + j, r, n);
        vst(t + j, vmul(r, vld(m->linear_before_reset ? t + j : hp + j, n)), n);
    }
}

static void cells_gru_finish(const rnnd_gru_math *m, const float *gxh, const float *z,
                             const float *t, const float *hp, float *hn, size_t j0, size_t j1)
{
    const vf one = vset1(1.0f);
    for (size_t j = j0; j < j1; j += VLEN) {
        const size_t n = j1 - j < VLEN ? j1 - j : VLEN;
        vf c = vadd(vld(gxh + j, n), vld(t + j, n));
        c = vm_act(m->ag, vm_clip(m->has_clip, m->clip, c));
        vf zz = vld(z + j, n);
        vst(hn + j, vadd(vmul(vsub(one, zz), c), vmul(zz, vld(hp + j, n))), n);
    }
}

static void cells_min_row(const rnnd_min_math *m, const float *gx, const float *hp, float *hn,
                          size_t j0, size_t j1)
{
    const size_t H = m->H;
    const vf one = vset1(1.0f);
    for (size_t j = j0; j < j1; j += VLEN) {
        const size_t n = j1 - j < VLEN ? j1 - j : VLEN;
        const vf h = vld(hp + j, n);
        vf out;
        if (!m->lstm) {
            vf z = vm_act(m->af, vld(gx + j, n));
            vf c = vm_act(m->ag, vld(gx + H + j, n));
            out = vadd(vmul(vsub(one, z), h), vmul(z, c));
        } else {
            vf f = vm_act(m->af, vld(gx + j, n));
            vf i = vm_act(m->af, vld(gx + H + j, n));
            vf c = vm_act(m->ag, vld(gx + 2 * H + j, n));
            vf s = vadd(f, i);
            out = vadd(vmul(vdiv(f, s), h), vmul(vdiv(i, s), c));
        }
        vst(hn + j, out, n);
    }
}

static void cells_clock_row(const rnnd_activation *af, const float *gx, const float *g, float *hn,
                            size_t j0, size_t j1)
{
    for (size_t j = j0; j < j1; j += VLEN) {
        const size_t n = j1 - j < VLEN ? j1 - j : VLEN;
        vst(hn + j, vm_act(af, vadd(vld(gx + j, n), vld(g + j, n))), n);
    }
}

/* The sLSTM row of rnnd/kernels.h; kern_slstm_row_scalar runs the same operations one unit
 * at a time through the same kernels_vmath.h text, so every path gives the same bits. */
static void cells_slstm_row(const rnnd_slstm_math *m, const float *gx, const float *g,
                            const float *s, float *sn, float *hn, size_t j0, size_t j1)
{
    const size_t H = m->H;
    const vf zero = vset1(0.0f);
    for (size_t j = j0; j < j1; j += VLEN) {
        const size_t n = j1 - j < VLEN ? j1 - j : VLEN;
        vf pi = vadd(vld(gx + j, n), vld(g + j, n));
        vf pf = vadd(vld(gx + H + j, n), vld(g + H + j, n));
        vf pz = vadd(vld(gx + 2 * H + j, n), vld(g + 2 * H + j, n));
        vf po = vadd(vld(gx + 3 * H + j, n), vld(g + 3 * H + j, n));
        vf lf = m->exp_forget ? pf : vsub(zero, vm_softplus(vsub(zero, pf)));
        vf a = vadd(lf, vld(s + 2 * H + j, n));
        vf mx = vmax(a, pi);
        vf ig = vm_exp(vsub(pi, mx));
        vf fg = vm_exp(vsub(a, mx));
        vf c = vadd(vmul(fg, vld(s + j, n)), vmul(ig, vm_tanh(pz)));
        vf nn = vadd(vmul(fg, vld(s + H + j, n)), ig);
        vf h = vdiv(vmul(vm_sigmoid(po), c), nn);
        vst(sn + j, c, n);
        vst(sn + H + j, nn, n);
        vst(sn + 2 * H + j, mx, n);
        vst(hn + j, h, n);
    }
}

#endif
