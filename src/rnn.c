/* The recurrent core: packs a model's weights for the kernels and runs cells, layers and the
 * head, one step for a batch of sessions (rnnd_net_step) or whole sequences
 * (rnnd_net_forward).
 *
 * Batch and chunk invariance of the step path rests on two things: the kernels compute every
 * element in a fixed order (see rnnd/kernels.h), and everything here is elementwise float
 * arithmetic with FMA contraction off (-ffp-contract=off), so a row's results never depend on
 * the other rows. */
#include "config.h"

#include <cblas.h>
#include <limits.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rnnd/rnn.h"
#include "rnnd/status.h"

/* Weights of one layer direction in the kernels' layout. */
typedef struct dir_pack {
    rnnd_packed W;      /* [G*H, in_dim] */
    rnnd_packed R;      /* [G*H, out_dim]; gru: only the z, r rows [2H, out_dim] */
    rnnd_packed Rh;     /* gru: the h rows [H, out_dim] */
    rnnd_packed proj;   /* lstm proj_size: [P, H] */
    rnnd_packed V;      /* jordan: [O, H] */
} dir_pack;

struct rnnd_net {
    rnnd_model *model;
    const rnnd_model_spec *spec;
    const rnnd_kernels *k;
    dir_pack (*packs)[2];       /* [n_layers][2] */
    rnnd_packed head;
    size_t state_floats;
    size_t *state_off;          /* [n_layers * 2]: offset of h for (layer, dir) */
    int out_dim;
    int max_in, max_gates, max_hidden, max_out;
    int use_openblas;           /* whole-sequence products through OpenBLAS */
    int stateful;               /* every layer forward-only: steppable */
};

struct rnnd_work {
    size_t max_batch;
    float *x, *y;       /* layer input / output, [B, max(max_in, max_out)] */
    float *h;           /* gathered previous h, [B, max_out] */
    float *gx, *gh;     /* gate pre-activations, [B, max_gates] */
    float *t1, *t2;     /* [B, max_hidden] temporaries */
};

/* ---- helpers --------------------------------------------------------------------------- */

static int imax(int a, int b) { return a > b ? a : b; }

static size_t layer_state_floats(const rnnd_layer_spec *L)
{
    return (size_t)L->out_dim + (L->cell == RNND_CELL_LSTM ? (size_t)L->hidden : 0);
}

static void clip_inplace(const rnnd_layer_spec *L, float *v, size_t n)
{
    if (!L->has_clip)
        return;
    float c = L->clip;
    for (size_t i = 0; i < n; i++)
        v[i] = v[i] > c ? c : (v[i] < -c ? -c : v[i]);
}

/* Softmax / log-softmax over one row; the sum runs in index order so rows are independent. */
static void normalize_row(int norm, float *v, int n)
{
    if (norm == RNND_NORM_NONE)
        return;
    float m = v[0];
    for (int i = 1; i < n; i++)
        if (v[i] > m)
            m = v[i];
    float sum = 0.0f;
    for (int i = 0; i < n; i++)
        sum += expf(v[i] - m);
    if (norm == RNND_NORM_SOFTMAX) {
        for (int i = 0; i < n; i++)
            v[i] = expf(v[i] - m) / sum;
    } else {
        float ls = logf(sum);
        for (int i = 0; i < n; i++)
            v[i] = (v[i] - m) - ls;
    }
}

static void release_pack(dir_pack *p)
{
    rnnd_pack_release(&p->W);
    rnnd_pack_release(&p->R);
    rnnd_pack_release(&p->Rh);
    rnnd_pack_release(&p->proj);
    rnnd_pack_release(&p->V);
}

static int pack_dir(const rnnd_layer_spec *L, const rnnd_dir_weights *w, dir_pack *p)
{
    int H = L->hidden, GH = L->gates * L->hidden;
    int rc = rnnd_pack(w->W, GH, L->in_dim, &p->W);
    if (rc == 0 && L->cell == RNND_CELL_GRU) {
        rc = rnnd_pack(w->R, 2 * H, L->out_dim, &p->R);
        if (rc == 0)
            rc = rnnd_pack(w->R + (size_t)2 * H * L->out_dim, H, L->out_dim, &p->Rh);
    } else if (rc == 0) {
        rc = rnnd_pack(w->R, GH, L->out_dim, &p->R);
    }
    if (rc == 0 && L->cell == RNND_CELL_LSTM && L->proj_size > 0)
        rc = rnnd_pack(w->proj, L->proj_size, H, &p->proj);
    if (rc == 0 && L->cell == RNND_CELL_JORDAN)
        rc = rnnd_pack(w->V, L->output_size, H, &p->V);
    return rc;
}

/* ---- net ------------------------------------------------------------------------------- */

int rnnd_net_new(rnnd_model *model, const rnnd_kernels *kernels, rnnd_net **out,
                 char *err, size_t errlen)
{
    *out = NULL;
    rnnd_net *n = calloc(1, sizeof *n);
    if (!n) {
        snprintf(err, errlen, "out of memory");
        return RNND_ERR_NOMEM;
    }
    const rnnd_model_spec *s = rnnd_model_get_spec(model);
    n->model = rnnd_model_ref(model);
    n->spec = s;
    n->k = kernels;
    n->packs = calloc((size_t)s->n_layers, sizeof *n->packs);
    n->state_off = calloc((size_t)s->n_layers * 2, sizeof *n->state_off);
    if (!n->packs || !n->state_off)
        goto oom;
    n->max_in = s->input_dim;
    for (int l = 0; l < s->n_layers; l++) {
        const rnnd_layer_spec *L = &s->layers[l];
        for (int d = 0; d < L->num_directions; d++) {
            if (pack_dir(L, &L->w[d], &n->packs[l][d]) != 0)
                goto oom;
            n->state_off[l * 2 + d] = n->state_floats;
            n->state_floats += layer_state_floats(L);
        }
        n->max_in = imax(n->max_in, L->in_dim);
        n->max_gates = imax(n->max_gates, L->gates * L->hidden);
        n->max_hidden = imax(n->max_hidden, imax(L->hidden, L->out_dim));
        n->max_out = imax(n->max_out, L->out_dim * L->num_directions);
    }
    if (s->has_head) {
        if (rnnd_pack(s->head_W, s->head_out, s->head_in, &n->head) != 0)
            goto oom;
        n->max_out = imax(n->max_out, s->head_out);
    }
    n->out_dim = rnnd_model_output_dim(model);
    n->stateful = rnnd_model_is_stateful(model);
    *out = n;
    return RNND_OK;
oom:
    rnnd_net_free(n);
    snprintf(err, errlen, "out of memory packing the weights");
    return RNND_ERR_NOMEM;
}

void rnnd_net_free(rnnd_net *n)
{
    if (!n)
        return;
    if (n->packs)
        for (int l = 0; l < n->spec->n_layers; l++)
            for (int d = 0; d < 2; d++)
                release_pack(&n->packs[l][d]);
    rnnd_pack_release(&n->head);
    free(n->packs);
    free(n->state_off);
    rnnd_model_unref(n->model);
    free(n);
}

void rnnd_net_use_openblas(rnnd_net *n, int on) { n->use_openblas = on; }

rnnd_model *rnnd_net_model(const rnnd_net *n) { return n->model; }
const rnnd_kernels *rnnd_net_kernels(const rnnd_net *n) { return n->k; }
size_t rnnd_net_state_floats(const rnnd_net *n) { return n->state_floats; }
int rnnd_net_output_dim(const rnnd_net *n) { return n->out_dim; }

/* ---- cells ----------------------------------------------------------------------------
 * Each cell function advances NB rows one step. GX holds the input projection (bias Wb
 * included) with row stride LDGX; HP/CP the previous h and c of each row (strides LDH/LDC);
 * the new h and c are written to HN/CN (may alias HP/CP row-wise only after reading: the
 * functions read all of a row's previous state before writing it). GH, T1, T2 are scratch. */

typedef struct cell_io {
    size_t nb;
    const float *gx; size_t ldgx;
    const float *hp; size_t ldhp;
    const float *cp; size_t ldcp;
    float *hn; size_t ldhn;
    float *cn; size_t ldcn;
} cell_io;

static void cell_rnn(const rnnd_net *n, const rnnd_layer_spec *L, const dir_pack *p, int d,
                     const rnnd_dir_weights *w, const cell_io *io, float *gh)
{
    int H = L->hidden;
    n->k->gemv(&p->R, w->Rb, io->hp, io->ldhp, io->nb, gh, (size_t)H, 0, H);
    for (size_t b = 0; b < io->nb; b++) {
        const float *gx = io->gx + b * io->ldgx;
        float *g = gh + b * (size_t)H;
        for (int j = 0; j < H; j++)
            g[j] = gx[j] + g[j];
        clip_inplace(L, g, (size_t)H);
        n->k->act(&L->act[d][0], g, (size_t)H);
        memcpy(io->hn + b * io->ldhn, g, (size_t)H * sizeof(float));
    }
}

static void cell_jordan(const rnnd_net *n, const rnnd_layer_spec *L, const dir_pack *p, int d,
                        const rnnd_dir_weights *w, const cell_io *io, float *gh, float *t1)
{
    int H = L->hidden, O = L->output_size;
    n->k->gemv(&p->R, w->Rb, io->hp, io->ldhp, io->nb, gh, (size_t)H, 0, H);
    for (size_t b = 0; b < io->nb; b++) {
        const float *gx = io->gx + b * io->ldgx;
        float *g = gh + b * (size_t)H;
        for (int j = 0; j < H; j++)
            g[j] = gx[j] + g[j];
        clip_inplace(L, g, (size_t)H);
        n->k->act(&L->act[d][0], g, (size_t)H);
    }
    n->k->gemv(&p->V, w->Vb, gh, (size_t)H, io->nb, t1, (size_t)O, 0, O);
    for (size_t b = 0; b < io->nb; b++) {
        float *y = t1 + b * (size_t)O;
        n->k->act(&L->act[d][1], y, (size_t)O);
        memcpy(io->hn + b * io->ldhn, y, (size_t)O * sizeof(float));
    }
}

static void cell_gru(const rnnd_net *n, const rnnd_layer_spec *L, const dir_pack *p, int d,
                     const rnnd_dir_weights *w, const cell_io *io, float *gh, float *t1,
                     float *t2)
{
    int H = L->hidden;
    size_t ld = (size_t)2 * H;
    const rnnd_activation *af = &L->act[d][0], *ag = &L->act[d][1];
    /* z and r */
    n->k->gemv(&p->R, w->Rb, io->hp, io->ldhp, io->nb, gh, ld, 0, 2 * H);
    for (size_t b = 0; b < io->nb; b++) {
        const float *gx = io->gx + b * io->ldgx;
        float *g = gh + b * ld;
        for (int j = 0; j < 2 * H; j++)
            g[j] = gx[j] + g[j];
        clip_inplace(L, g, ld);
        n->k->act(af, g, ld);
    }
    /* the candidate's recurrent term: Rh h + Rbh (lbr 1) or Rh (r * h) + Rbh (lbr 0) */
    if (L->linear_before_reset) {
        n->k->gemv(&p->Rh, w->Rb + 2 * H, io->hp, io->ldhp, io->nb, t1, (size_t)H, 0, H);
        for (size_t b = 0; b < io->nb; b++) {
            const float *r = gh + b * ld + H;
            float *t = t1 + b * (size_t)H;
            for (int j = 0; j < H; j++)
                t[j] = r[j] * t[j];
        }
    } else {
        for (size_t b = 0; b < io->nb; b++) {
            const float *r = gh + b * ld + H;
            const float *h = io->hp + b * io->ldhp;
            float *t = t2 + b * (size_t)H;
            for (int j = 0; j < H; j++)
                t[j] = r[j] * h[j];
        }
        n->k->gemv(&p->Rh, w->Rb + 2 * H, t2, (size_t)H, io->nb, t1, (size_t)H, 0, H);
    }
    for (size_t b = 0; b < io->nb; b++) {
        const float *gx = io->gx + b * io->ldgx + 2 * H;
        float *t = t1 + b * (size_t)H;
        for (int j = 0; j < H; j++)
            t[j] = gx[j] + t[j];
        clip_inplace(L, t, (size_t)H);
        n->k->act(ag, t, (size_t)H);
        const float *z = gh + b * ld;
        const float *h = io->hp + b * io->ldhp;
        float *hn = io->hn + b * io->ldhn;
        for (int j = 0; j < H; j++)
            hn[j] = (1.0f - z[j]) * t[j] + z[j] * h[j];
    }
}

static void peep_add(float *g, const float *p, const float *c, int H)
{
    for (int j = 0; j < H; j++)
        g[j] = g[j] + p[j] * c[j];
}

static void cell_lstm(const rnnd_net *n, const rnnd_layer_spec *L, const dir_pack *p, int d,
                      const rnnd_dir_weights *w, const cell_io *io, float *gh, float *t1)
{
    int H = L->hidden, G = L->gates;
    size_t ld = (size_t)G * H;
    const rnnd_activation *af = &L->act[d][0], *ag = &L->act[d][1], *ah = &L->act[d][2];
    /* gate blocks: i, o, f, c (no forget gate: i, o, c) */
    int oi = 0, oo = H, of = L->forget_gate ? 2 * H : -1, oc = L->forget_gate ? 3 * H : 2 * H;
    int P = L->proj_size;

    n->k->gemv(&p->R, w->Rb, io->hp, io->ldhp, io->nb, gh, ld, 0, (int)ld);
    for (size_t b = 0; b < io->nb; b++) {
        const float *gx = io->gx + b * io->ldgx;
        const float *cp = io->cp + b * io->ldcp;
        float *g = gh + b * ld;
        for (size_t j = 0; j < ld; j++)
            g[j] = gx[j] + g[j];
        float *gi = g + oi, *go = g + oo, *gc = g + oc;
        float *gf = of >= 0 ? g + of : NULL;
        if (L->peepholes) {
            peep_add(gi, w->P, cp, H);
            if (gf)
                peep_add(gf, w->P + 2 * H, cp, H);
        }
        clip_inplace(L, gi, (size_t)H);
        n->k->act(af, gi, (size_t)H);
        if (gf && !L->input_forget) {
            clip_inplace(L, gf, (size_t)H);
            n->k->act(af, gf, (size_t)H);
        }
        clip_inplace(L, gc, (size_t)H);
        n->k->act(ag, gc, (size_t)H);
        float *cn = io->cn + b * io->ldcn;
        if (!gf) {
            for (int j = 0; j < H; j++)
                cn[j] = cp[j] + gi[j] * gc[j];
        } else if (L->input_forget) {
            for (int j = 0; j < H; j++)
                cn[j] = (1.0f - gi[j]) * cp[j] + gi[j] * gc[j];
        } else {
            for (int j = 0; j < H; j++)
                cn[j] = gf[j] * cp[j] + gi[j] * gc[j];
        }
        if (L->peepholes)
            peep_add(go, w->P + H, cn, H);
        clip_inplace(L, go, (size_t)H);
        n->k->act(af, go, (size_t)H);
        /* h(c) into the c block of the scratch (no longer needed) */
        memcpy(gc, cn, (size_t)H * sizeof(float));
        n->k->act(ah, gc, (size_t)H);
        float *dst = P > 0 ? t1 + b * (size_t)H : io->hn + b * io->ldhn;
        for (int j = 0; j < H; j++)
            dst[j] = go[j] * gc[j];
    }
    if (P > 0) {
        /* hn rows are strided; gemv writes with a row stride, so project straight into them */
        n->k->gemv(&p->proj, NULL, t1, (size_t)H, io->nb, io->hn, io->ldhn, 0, P);
    }
}

static void run_cell(const rnnd_net *n, int l, int d, const cell_io *io, float *gh, float *t1,
                     float *t2)
{
    const rnnd_layer_spec *L = &n->spec->layers[l];
    const dir_pack *p = &n->packs[l][d];
    const rnnd_dir_weights *w = &L->w[d];
    switch (L->cell) {
    case RNND_CELL_RNN: cell_rnn(n, L, p, d, w, io, gh); break;
    case RNND_CELL_LSTM: cell_lstm(n, L, p, d, w, io, gh, t1); break;
    case RNND_CELL_GRU: cell_gru(n, L, p, d, w, io, gh, t1, t2); break;
    case RNND_CELL_JORDAN: cell_jordan(n, L, p, d, w, io, gh, t1); break;
    }
}

/* ---- the step path --------------------------------------------------------------------- */

rnnd_work *rnnd_work_new(const rnnd_net *n, size_t max_batch)
{
    if (max_batch == 0)
        max_batch = 1;
    rnnd_work *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    size_t io = (size_t)imax(n->max_in, n->max_out);
    w->max_batch = max_batch;
    w->x = malloc(max_batch * io * sizeof(float));
    w->y = malloc(max_batch * io * sizeof(float));
    w->h = malloc(max_batch * (size_t)imax(n->max_out, 1) * sizeof(float));
    w->gx = malloc(max_batch * (size_t)imax(n->max_gates, 1) * sizeof(float));
    w->gh = malloc(max_batch * (size_t)imax(n->max_gates, 1) * sizeof(float));
    w->t1 = malloc(max_batch * (size_t)imax(n->max_hidden, 1) * sizeof(float));
    w->t2 = malloc(max_batch * (size_t)imax(n->max_hidden, 1) * sizeof(float));
    if (!w->x || !w->y || !w->h || !w->gx || !w->gh || !w->t1 || !w->t2) {
        rnnd_work_free(w);
        return NULL;
    }
    return w;
}

void rnnd_work_free(rnnd_work *w)
{
    if (!w)
        return;
    free(w->x);
    free(w->y);
    free(w->h);
    free(w->gx);
    free(w->gh);
    free(w->t1);
    free(w->t2);
    free(w);
}

static int check_tokens(const rnnd_model_spec *s, size_t B, const int32_t *tokens,
                        char *err, size_t errlen)
{
    for (size_t b = 0; b < B; b++)
        if (tokens[b] < 0 || tokens[b] >= s->vocab_size) {
            snprintf(err, errlen, "token id %ld out of range [0, %d)", (long)tokens[b],
                     s->vocab_size);
            return RNND_ERR_INVALID;
        }
    return RNND_OK;
}

static void embed(const rnnd_model_spec *s, size_t B, const int32_t *tokens, float *x)
{
    size_t D = (size_t)s->input_dim;
    for (size_t b = 0; b < B; b++)
        memcpy(x + b * D, s->embedding + (size_t)tokens[b] * D, D * sizeof(float));
}

int rnnd_net_step(const rnnd_net *n, rnnd_work *w, size_t B, const int32_t *tokens,
                  const float *vectors, float *const *states, float *out,
                  char *err, size_t errlen)
{
    const rnnd_model_spec *s = n->spec;
    if (!n->stateful) {
        snprintf(err, errlen, "the model has reverse or bidirectional layers: it runs only "
                 "on whole sequences");
        return RNND_ERR_UNSUPPORTED;
    }
    if (B > w->max_batch) {
        snprintf(err, errlen, "batch of %zu exceeds the work area's %zu", B, w->max_batch);
        return RNND_ERR_LIMIT;
    }
    if (B == 0)
        return RNND_OK;
    const float *x;
    size_t ldx = (size_t)s->input_dim;
    if (s->input_kind == RNND_INPUT_TOKENS) {
        int rc = check_tokens(s, B, tokens, err, errlen);
        if (rc)
            return rc;
        embed(s, B, tokens, w->x);
        x = w->x;
    } else {
        x = vectors;
    }
    float *ybuf = w->y, *xbuf = w->x;
    for (int l = 0; l < s->n_layers; l++) {
        const rnnd_layer_spec *L = &s->layers[l];
        size_t O = (size_t)L->out_dim, GH = (size_t)L->gates * L->hidden;
        size_t off = n->state_off[l * 2];
        n->k->gemv(&n->packs[l][0].W, L->w[0].Wb, x, ldx, B, w->gx, GH, 0, (int)GH);
        for (size_t b = 0; b < B; b++)
            memcpy(w->h + b * O, states[b] + off, O * sizeof(float));
        cell_io io = {
            .nb = B, .gx = w->gx, .ldgx = GH, .hp = w->h, .ldhp = O,
            .hn = ybuf, .ldhn = O,
        };
        if (L->cell == RNND_CELL_LSTM) {
            /* gather c into t2 (the lstm cell does not use t2) and scatter it back after */
            size_t H = (size_t)L->hidden;
            for (size_t b = 0; b < B; b++)
                memcpy(w->t2 + b * H, states[b] + off + O, H * sizeof(float));
            io.cp = w->t2;
            io.ldcp = H;
            io.cn = w->t2;
            io.ldcn = H;
        }
        run_cell(n, l, 0, &io, w->gh, w->t1, w->t2);
        for (size_t b = 0; b < B; b++) {
            memcpy(states[b] + off, ybuf + b * O, O * sizeof(float));
            if (L->cell == RNND_CELL_LSTM)
                memcpy(states[b] + off + O, w->t2 + b * (size_t)L->hidden,
                       (size_t)L->hidden * sizeof(float));
        }
        x = ybuf;
        ldx = O;
        float *t = ybuf;
        ybuf = xbuf;
        xbuf = t;
    }
    if (out) {
        if (s->has_head) {
            n->k->gemv(&n->head, s->head_b, x, ldx, B, out, (size_t)s->head_out, 0,
                       s->head_out);
            for (size_t b = 0; b < B; b++)
                normalize_row(s->head_norm, out + b * (size_t)s->head_out, s->head_out);
        } else {
            for (size_t b = 0; b < B; b++)
                memcpy(out + b * ldx, x + b * ldx, ldx * sizeof(float));
        }
    }
    return RNND_OK;
}

/* ---- the whole-sequence path ----------------------------------------------------------- */

typedef struct seq_plan {
    size_t B, N;            /* sequences, total steps */
    const size_t *lens;
    size_t *off;            /* [B] row of step 0 of sequence b in the [N, ...] buffers */
    size_t *order;          /* [B] sequences by length, longest first */
    size_t maxlen;
} seq_plan;

static int cmp_len_desc(const void *a, const void *b, void *ctx)
{
    const size_t *lens = ctx;
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    if (lens[x] != lens[y])
        return lens[x] > lens[y] ? -1 : 1;
    return x < y ? -1 : (x > y);
}

/* X [N, in] -> GX [N, G*H] = X W^T + Wb: one product over every step of every sequence. Our
 * own kernel gives each element exactly the sum the step path computes, so whole sequences
 * equal step-by-step runs bit for bit; OpenBLAS (opt-in) is a little faster on big products
 * but rounds differently. */
static void input_projection(const rnnd_net *n, int l, int d, const float *X, size_t N,
                             float *GX)
{
    const rnnd_layer_spec *L = &n->spec->layers[l];
    const rnnd_dir_weights *w = &L->w[d];
    int GH = L->gates * L->hidden;
    if (!n->use_openblas) {
        n->k->gemv(&n->packs[l][d].W, w->Wb, X, (size_t)L->in_dim, N, GX, (size_t)GH, 0, GH);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, GH, L->in_dim, 1.0f, X,
                L->in_dim, w->W, L->in_dim, 0.0f, GX, GH);
    for (size_t r = 0; r < N; r++) {
        float *g = GX + r * (size_t)GH;
        for (int j = 0; j < GH; j++)
            g[j] = g[j] + w->Wb[j];
    }
}

/* The head over N rows of the last layer's output, the same way. */
static void head_projection(const rnnd_net *n, const float *X, size_t N, float *Y)
{
    const rnnd_model_spec *s = n->spec;
    size_t K = (size_t)s->head_out;
    if (!n->use_openblas) {
        n->k->gemv(&n->head, s->head_b, X, (size_t)s->head_in, N, Y, K, 0, s->head_out);
    } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, s->head_out, s->head_in,
                    1.0f, X, s->head_in, s->head_W, s->head_in, 0.0f, Y, s->head_out);
        for (size_t r = 0; r < N; r++)
            for (size_t j = 0; j < K; j++)
                Y[r * K + j] = Y[r * K + j] + s->head_b[j];
    }
    for (size_t r = 0; r < N; r++)
        normalize_row(s->head_norm, Y + r * K, s->head_out);
}

typedef struct seq_bufs {
    float *gx_all, *gxb, *hcur, *hnew, *ccur, *gh, *t1, *t2;
} seq_bufs;

static void run_direction(const rnnd_net *n, int l, int d, const seq_plan *sp,
                          const float *X, float *Y, const float *const *init,
                          float *const *final, seq_bufs *bf)
{
    const rnnd_layer_spec *L = &n->spec->layers[l];
    size_t O = (size_t)L->out_dim, H = (size_t)L->hidden, GH = (size_t)L->gates * L->hidden;
    size_t ldy = O * (size_t)L->num_directions;
    size_t soff = n->state_off[l * 2 + d];
    int lstm = L->cell == RNND_CELL_LSTM;
    int reversed = L->direction == RNND_DIR_REVERSE || d == 1;

    input_projection(n, l, d, X, sp->N, bf->gx_all);
    for (size_t i = 0; i < sp->B; i++) {
        size_t b = sp->order[i];
        const float *st = init && init[b] ? init[b] + soff : NULL;
        if (st) {
            memcpy(bf->hcur + i * O, st, O * sizeof(float));
            if (lstm)
                memcpy(bf->ccur + i * H, st + O, H * sizeof(float));
        } else {
            memset(bf->hcur + i * O, 0, O * sizeof(float));
            if (lstm)
                memset(bf->ccur + i * H, 0, H * sizeof(float));
        }
    }
    size_t nb = sp->B;
    for (size_t t = 0; t < sp->maxlen; t++) {
        while (nb > 0 && sp->lens[sp->order[nb - 1]] <= t)
            nb--;
        for (size_t i = 0; i < nb; i++) {
            size_t b = sp->order[i];
            size_t pos = reversed ? sp->lens[b] - 1 - t : t;
            memcpy(bf->gxb + i * GH, bf->gx_all + (sp->off[b] + pos) * GH, GH * sizeof(float));
        }
        cell_io io = {
            .nb = nb, .gx = bf->gxb, .ldgx = GH, .hp = bf->hcur, .ldhp = O,
            .cp = bf->ccur, .ldcp = H, .hn = bf->hnew, .ldhn = O, .cn = bf->ccur, .ldcn = H,
        };
        run_cell(n, l, d, &io, bf->gh, bf->t1, bf->t2);
        memcpy(bf->hcur, bf->hnew, nb * O * sizeof(float));
        for (size_t i = 0; i < nb; i++) {
            size_t b = sp->order[i];
            size_t pos = reversed ? sp->lens[b] - 1 - t : t;
            memcpy(Y + (sp->off[b] + pos) * ldy + (size_t)d * O, bf->hnew + i * O,
                   O * sizeof(float));
        }
    }
    if (!final)
        return;
    for (size_t i = 0; i < sp->B; i++) {
        size_t b = sp->order[i];
        if (!final[b])
            continue;
        memcpy(final[b] + soff, bf->hcur + i * O, O * sizeof(float));
        if (lstm)
            memcpy(final[b] + soff + O, bf->ccur + i * H, H * sizeof(float));
    }
}

static void free_bufs(seq_bufs *bf)
{
    free(bf->gx_all);
    free(bf->gxb);
    free(bf->hcur);
    free(bf->hnew);
    free(bf->ccur);
    free(bf->gh);
    free(bf->t1);
    free(bf->t2);
}

static float *alloc_floats(size_t a, size_t b)
{
    size_t n;
    if (__builtin_mul_overflow(a, b, &n) || n > SIZE_MAX / sizeof(float))
        return NULL;
    return malloc((n ? n : 1) * sizeof(float));
}

int rnnd_net_forward(const rnnd_net *n, size_t B, const size_t *lens,
                     const int32_t *const *tokens, const float *const *vectors,
                     const float *const *init, float *const *outputs, float *const *final,
                     char *err, size_t errlen)
{
    const rnnd_model_spec *s = n->spec;
    seq_plan sp = {.B = B, .lens = lens};
    seq_bufs bf = {0};
    float *X = NULL, *Y = NULL;
    int rc = RNND_ERR_NOMEM;

    if (B == 0)
        return RNND_OK;
    for (size_t b = 0; b < B; b++) {
        if (lens[b] == 0) {
            snprintf(err, errlen, "inputs[%zu]: a sequence needs at least one step", b);
            return RNND_ERR_INVALID;
        }
        if (s->input_kind == RNND_INPUT_TOKENS) {
            rc = check_tokens(s, lens[b], tokens[b], err, errlen);
            if (rc)
                return rc;
        }
        if (__builtin_add_overflow(sp.N, lens[b], &sp.N)) {
            snprintf(err, errlen, "too many steps");
            return RNND_ERR_LIMIT;
        }
        if (lens[b] > sp.maxlen)
            sp.maxlen = lens[b];
    }
    if (sp.N > INT_MAX / 4) {   /* cblas takes int sizes */
        snprintf(err, errlen, "too many steps in one call (%zu)", sp.N);
        return RNND_ERR_LIMIT;
    }
    sp.off = malloc(B * sizeof *sp.off);
    sp.order = malloc(B * sizeof *sp.order);
    size_t wide = (size_t)imax(imax(n->max_in, n->max_out), 1);
    X = alloc_floats(sp.N, wide);
    Y = alloc_floats(sp.N, wide);
    bf.gx_all = alloc_floats(sp.N, (size_t)imax(n->max_gates, 1));
    bf.gxb = alloc_floats(B, (size_t)imax(n->max_gates, 1));
    bf.gh = alloc_floats(B, (size_t)imax(n->max_gates, 1));
    bf.hcur = alloc_floats(B, wide);
    bf.hnew = alloc_floats(B, wide);
    bf.ccur = alloc_floats(B, (size_t)imax(n->max_hidden, 1));
    bf.t1 = alloc_floats(B, (size_t)imax(n->max_hidden, 1));
    bf.t2 = alloc_floats(B, (size_t)imax(n->max_hidden, 1));
    if (!sp.off || !sp.order || !X || !Y || !bf.gx_all || !bf.gxb || !bf.gh || !bf.hcur ||
        !bf.hnew || !bf.ccur || !bf.t1 || !bf.t2) {
        snprintf(err, errlen, "out of memory for %zu steps", sp.N);
        goto out;
    }
    size_t D = (size_t)s->input_dim, row = 0;
    for (size_t b = 0; b < B; b++) {
        sp.off[b] = row;
        sp.order[b] = b;
        if (s->input_kind == RNND_INPUT_TOKENS)
            embed(s, lens[b], tokens[b], X + row * D);
        else
            memcpy(X + row * D, vectors[b], lens[b] * D * sizeof(float));
        row += lens[b];
    }
    qsort_r(sp.order, B, sizeof *sp.order, cmp_len_desc, (void *)lens);

    size_t ldx = D;
    for (int l = 0; l < s->n_layers; l++) {
        const rnnd_layer_spec *L = &s->layers[l];
        for (int d = 0; d < L->num_directions; d++)
            run_direction(n, l, d, &sp, X, Y, init, final, &bf);
        ldx = (size_t)L->out_dim * L->num_directions;
        float *t = X;
        X = Y;
        Y = t;
    }
    /* X now holds the last layer's output [N, ldx] */
    if (s->has_head) {
        size_t K = (size_t)s->head_out;
        head_projection(n, X, sp.N, Y);
        for (size_t b = 0; b < B; b++)
            memcpy(outputs[b], Y + sp.off[b] * K, lens[b] * K * sizeof(float));
    } else {
        for (size_t b = 0; b < B; b++)
            memcpy(outputs[b], X + sp.off[b] * ldx, lens[b] * ldx * sizeof(float));
    }
    rc = RNND_OK;
out:
    free(sp.off);
    free(sp.order);
    free(X);
    free(Y);
    free_bufs(&bf);
    return rc;
}
