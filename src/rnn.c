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
#include <pthread.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rnnd/rnn.h"
#include "rnnd/status.h"

/* Weights of one layer direction in the kernels' layout. */
typedef struct dir_pack {
    rnnd_packed W;    /* [G*H, in_dim]; depth gate: [(G+1)*H, in_dim], D's rows last */
    float *wb;        /* depth gate: [(G+1)*H], Wb then Db; else NULL (W's bias is Wb) */
    rnnd_packed R;    /* [G*H, out_dim]; gru: only the z, r rows [2H, out_dim] */
    rnnd_packed Rh;   /* gru: the h rows [H, out_dim] */
    rnnd_packed proj; /* lstm proj_size: [P, H] */
    rnnd_packed V;    /* jordan: [O, H] */
    /* clockwork: module k's rows of R, only the columns of modules k.. (the blocks below
     * the diagonal are zero and skipped): [H/m, H - k*H/m] each; n_mod of them */
    rnnd_packed *Rmod;
    int n_mod;
    /* slstm: R's diagonal blocks, [d, d] each (d = H / K), block g * K + k for gate g
     * (i, f, z, o) and head k: rows g*H + k*d ... of R, read against h[k*d, (k+1)*d).
     * Separate matrices, so the product skips the zeros off the diagonal and each row
     * is the same gemv chain as every other layer's. */
    rnnd_packed *Rblk;
    int n_rblk;
} dir_pack;

/* Every packed matrix of a model: built once, owned by the model (rnnd_model_shared_packs),
 * read by all its nets. */
typedef struct model_packs {
    int n_layers;
    dir_pack (*dirs)[2];                    /* [n_layers][2] */
    rnnd_packed head[RNND_MAX_HEAD_LAYERS]; /* the head's linear layers */
} model_packs;

/* Whole-sequence workspaces kept between calls, so a call allocates nothing once the sizes
 * it needs have been seen (fresh big blocks from malloc are fresh mappings: page faults on
 * every call). At most WS_CACHE_N are kept, none over WS_KEEP_BYTES. */
#define WS_CACHE_N 2
#define WS_KEEP_BYTES ((size_t)256 << 20)
typedef struct seq_ws seq_ws;
typedef struct ws_cache {
    pthread_mutex_t mu;
    seq_ws *free[WS_CACHE_N];
    size_t n_free;
} ws_cache;
static void seq_ws_free(seq_ws *ws);

struct rnnd_net {
    rnnd_model *model;
    const rnnd_model_spec *spec;
    const rnnd_kernels *k;
    const dir_pack (*packs)[2]; /* [n_layers][2], the model's */
    const rnnd_packed *head;    /* [RNND_MAX_HEAD_LAYERS], the model's */
    size_t state_floats;
    size_t *state_off; /* [n_layers * 2]: offset of h for (layer, dir) */
    int out_dim;
    int max_in, max_gates, max_hidden, max_out;
    int depth_gated;  /* some layer has a depth gate: keep cells per step */
    int use_openblas; /* whole-sequence products through OpenBLAS */
    int stateful;     /* every layer forward-only: steppable */
    ws_cache *cache;  /* mutable behind a const net; has its own lock */
};

struct rnnd_work {
    size_t max_batch;
    float *x, *y;   /* layer input / output, [B, max(max_in, max_out)] */
    float *h;       /* gathered previous h, [B, max_out] */
    float *gx, *gh; /* gate pre-activations, [B, max_gates] */
    float *t1, *t2; /* [B, max_hidden] temporaries */
    float *c2;      /* depth gates: [B, max_hidden], an lstm's c in turn with t2 (see the
                         * step); NULL without */
    uint64_t *tc;   /* [B] clockwork counters of the layer being stepped */
};

/* ---- helpers --------------------------------------------------------------------------- */

static int imax(int a, int b) { return a > b ? a : b; }

/* Columns of a layer's input pre-activations: the gate blocks, and a depth gate's D x + Db
 * after them (computed with W x in one product, so every element sums alike). */
static size_t gx_width(const rnnd_layer_spec *L)
{
    return (size_t)(L->gates + (L->depth_gate ? 1 : 0)) * (size_t)L->hidden;
}

static size_t layer_state_floats(const rnnd_layer_spec *L)
{
    return (size_t)L->out_dim + rnnd_layer_extra_state(L);
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
    free(p->wb);
    p->wb = NULL;
    rnnd_pack_release(&p->W);
    rnnd_pack_release(&p->R);
    rnnd_pack_release(&p->Rh);
    rnnd_pack_release(&p->proj);
    rnnd_pack_release(&p->V);
    for (int k = 0; k < p->n_mod; k++)
        rnnd_pack_release(&p->Rmod[k]);
    free(p->Rmod);
    p->Rmod = NULL;
    p->n_mod = 0;
    for (int i = 0; i < p->n_rblk; i++)
        rnnd_pack_release(&p->Rblk[i]);
    free(p->Rblk);
    p->Rblk = NULL;
    p->n_rblk = 0;
}

/* Clockwork: each module's rows of R from its own diagonal block on, packed apart. */
static int pack_clock(const rnnd_layer_spec *L, const float *R, const float *Rs, int T, dir_pack *p)
{
    size_t H = (size_t)L->hidden, m = (size_t)L->n_periods, hm = H / m;
    float *tmp = malloc(hm * H * sizeof *tmp);
    p->Rmod = calloc(m, sizeof *p->Rmod);
    int rc = tmp && p->Rmod ? 0 : RNND_ERR_NOMEM;
    if (p->Rmod)
        p->n_mod = (int)m;
    for (size_t k = 0; k < m && rc == 0; k++) {
        size_t c0 = k * hm, cols = H - c0;
        for (size_t r = 0; r < hm; r++)
            memcpy(tmp + r * cols, R + (c0 + r) * H + c0, cols * sizeof *tmp);
        /* int8: a module's rows keep their whole row's scale (the skipped blocks are 0) */
        rc = rnnd_pack_typed(tmp, Rs ? Rs + c0 : NULL, (int)hm, (int)cols, T, &p->Rmod[k]);
    }
    free(tmp);
    return rc;
}

/* slstm: one packed matrix per gate and head (dir_pack.Rblk). */
static int pack_blocks(const rnnd_layer_spec *L, const float *R, const float *Rs, int T,
                       dir_pack *p)
{
    int K = L->heads, d = L->hidden / L->heads;
    p->Rblk = calloc((size_t)4 * (size_t)K, sizeof *p->Rblk);
    if (!p->Rblk)
        return RNND_ERR_NOMEM;
    p->n_rblk = 4 * K;
    for (int g = 0; g < 4; g++)
        for (int k = 0; k < K; k++) {
            size_t row = (size_t)g * L->hidden + (size_t)k * d;
            int rc = rnnd_pack_typed(R + row * (size_t)d, Rs ? Rs + row : NULL, d, d, T,
                                     &p->Rblk[g * K + k]);
            if (rc)
                return rc;
        }
    return 0;
}

/* A depth gate's D under W, and Db after Wb: one matrix, one bias. */
static int pack_depth_gate(const rnnd_layer_spec *L, const rnnd_dir_weights *w, int T, dir_pack *p)
{
    size_t H = (size_t)L->hidden, GH = (size_t)L->gates * H, in = (size_t)L->in_dim;
    float *m = malloc((GH + H) * in * sizeof(float));
    float *ms = w->W_s ? malloc((GH + H) * sizeof(float)) : NULL; /* int8: the row scales */
    p->wb = malloc((GH + H) * sizeof(float));
    if (!m || !p->wb || (w->W_s && !ms)) {
        free(m);
        free(ms);
        return RNND_ERR_NOMEM;
    }
    memcpy(m, w->W, GH * in * sizeof(float));
    memcpy(m + GH * in, w->D, H * in * sizeof(float));
    memcpy(p->wb, w->Wb, GH * sizeof(float));
    memcpy(p->wb + GH, w->Db, H * sizeof(float));
    if (ms) {
        memcpy(ms, w->W_s, GH * sizeof(float));
        memcpy(ms + GH, w->D_s, H * sizeof(float));
    }
    int rc = rnnd_pack_typed(m, ms, (int)(GH + H), (int)in, T, &p->W);
    free(m);
    free(ms);
    return rc;
}

/* Every matrix in the model's weight type T (the loader already rounded the values to it,
 * or for int8 quantized them, so packing them is exact). */
static int pack_dir(const rnnd_layer_spec *L, const rnnd_dir_weights *w, int T, dir_pack *p)
{
    int H = L->hidden, GH = L->gates * L->hidden;
    int rc = L->depth_gate ? pack_depth_gate(L, w, T, p)
                           : rnnd_pack_typed(w->W, w->W_s, GH, L->in_dim, T, &p->W);
    if (rnnd_cell_is_min(L->cell))
        return rc; /* no R */
    if (L->cell == RNND_CELL_CLOCKWORK)
        return rc ? rc : pack_clock(L, w->R, w->R_s, T, p);
    if (L->cell == RNND_CELL_SLSTM)
        return rc ? rc : pack_blocks(L, w->R, w->R_s, T, p);
    if (rc == 0 && L->cell == RNND_CELL_GRU) {
        rc = rnnd_pack_typed(w->R, w->R_s, 2 * H, L->out_dim, T, &p->R);
        if (rc == 0)
            rc = rnnd_pack_typed(w->R + (size_t)2 * H * L->out_dim, w->R_s ? w->R_s + 2 * H : NULL,
                                 H, L->out_dim, T, &p->Rh);
    } else if (rc == 0) {
        rc = rnnd_pack_typed(w->R, w->R_s, GH, L->out_dim, T, &p->R);
    }
    if (rc == 0 && L->cell == RNND_CELL_LSTM && L->proj_size > 0)
        rc = rnnd_pack_typed(w->proj, w->proj_s, L->proj_size, H, T, &p->proj);
    if (rc == 0 && L->cell == RNND_CELL_JORDAN)
        rc = rnnd_pack_typed(w->V, w->V_s, L->output_size, H, T, &p->V);
    return rc;
}

/* ---- net ------------------------------------------------------------------------------- */

static void model_packs_free(void *arg)
{
    model_packs *mp = arg;
    if (!mp)
        return;
    for (int l = 0; mp->dirs && l < mp->n_layers; l++)
        for (int d = 0; d < 2; d++)
            release_pack(&mp->dirs[l][d]);
    for (int k = 0; k < RNND_MAX_HEAD_LAYERS; k++)
        rnnd_pack_release(&mp->head[k]);
    free(mp->dirs);
    free(mp);
}

/* Every matrix of S in its weight type (the loader already rounded the values to it, or for
 * int8 quantized them, so packing them is exact). */
static int model_packs_build(const rnnd_model_spec *s, void **out)
{
    *out = NULL;
    model_packs *mp = calloc(1, sizeof *mp);
    if (!mp)
        return RNND_ERR_NOMEM;
    mp->n_layers = s->n_layers;
    mp->dirs = calloc((size_t)s->n_layers, sizeof *mp->dirs);
    int rc = mp->dirs ? 0 : RNND_ERR_NOMEM;
    /* the bf16 compute mode: the same bf16 values, packed in pairs for VDPBF16PS */
    const int T = s->weights == RNND_WEIGHTS_BF16 && s->compute == RNND_COMPUTE_BF16
        ? RNND_PACKED_BF16DP
        : s->weights;
    for (int l = 0; rc == 0 && l < s->n_layers; l++) {
        const rnnd_layer_spec *L = &s->layers[l];
        for (int d = 0; rc == 0 && d < L->num_directions; d++)
            rc = pack_dir(L, &L->w[d], T, &mp->dirs[l][d]);
    }
    for (int k = 0; rc == 0 && s->has_head && k < s->head_n; k++) {
        const rnnd_head_layer *h = &s->head_layers[k];
        if (h->op == RNND_HEAD_LINEAR)
            rc = rnnd_pack_typed(h->W, h->W_s, h->out_dim, h->in_dim, T, &mp->head[k]);
    }
    if (rc) {
        model_packs_free(mp);
        return RNND_ERR_NOMEM;
    }
    *out = mp;
    return 0;
}

int rnnd_net_new(rnnd_model *model, const rnnd_kernels *kernels, rnnd_net **out, char *err,
                 size_t errlen)
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
    n->state_off = calloc((size_t)s->n_layers * 2, sizeof *n->state_off);
    n->cache = calloc(1, sizeof *n->cache);
    if (!n->state_off || !n->cache)
        goto oom;
    pthread_mutex_init(&n->cache->mu, NULL);
    void *shared;
    if (rnnd_model_shared_packs(model, model_packs_build, model_packs_free, &shared) != 0)
        goto oom;
    const model_packs *mp = shared;
    n->packs = (const dir_pack(*)[2])mp->dirs;
    n->head = mp->head;
    n->max_in = s->input_dim;
    for (int l = 0; l < s->n_layers; l++) {
        const rnnd_layer_spec *L = &s->layers[l];
        for (int d = 0; d < L->num_directions; d++) {
            n->state_off[l * 2 + d] = n->state_floats;
            n->state_floats += layer_state_floats(L);
        }
        n->max_in = imax(n->max_in, L->in_dim);
        n->max_gates = imax(n->max_gates, (int)gx_width(L));
        n->depth_gated |= L->depth_gate;
        n->max_hidden = imax(n->max_hidden, imax(L->hidden, L->out_dim));
        /* the step path gathers c (lstm; slstm c, n, m) into a [B, max_hidden] scratch */
        n->max_hidden = imax(n->max_hidden, (int)rnnd_layer_cell_floats(L));
        n->max_out = imax(n->max_out, L->out_dim * L->num_directions);
    }
    for (int k = 0; s->has_head && k < s->head_n; k++)
        n->max_out = imax(n->max_out, s->head_layers[k].out_dim); /* buffers hold every width */
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
    if (n->cache) {
        for (size_t i = 0; i < n->cache->n_free; i++)
            seq_ws_free(n->cache->free[i]);
        pthread_mutex_destroy(&n->cache->mu);
        free(n->cache);
    }
    free(n->state_off);
    rnnd_model_unref(n->model);
    free(n);
}

void rnnd_net_use_openblas(rnnd_net *n, int on)
{
    /* OpenBLAS reads float matrices: only an F32 model keeps them (rnnd_model_shared_packs) */
    n->use_openblas = on && n->spec->weights == RNND_WEIGHTS_F32;
}

rnnd_model *rnnd_net_model(const rnnd_net *n) { return n->model; }
const rnnd_kernels *rnnd_net_kernels(const rnnd_net *n) { return n->k; }
size_t rnnd_net_state_floats(const rnnd_net *n) { return n->state_floats; }
int rnnd_net_output_dim(const rnnd_net *n) { return n->out_dim; }

int rnnd_net_scannable(const rnnd_net *n)
{
    /* pooling changes what forward() outputs (one row per sequence), not what a step does */
    if (!n->stateful || n->spec->pool != RNND_POOL_NONE)
        return 0;
    for (int l = 0; l < n->spec->n_layers; l++)
        if (!rnnd_cell_is_min(n->spec->layers[l].cell))
            return 0;
    return 1;
}

/* ---- parallel stages -------------------------------------------------------------------
 * A layer's step is a few stages; each stage splits its work into NT parts (row panels of a
 * weight matrix, or ranges of hidden units for the elementwise math) that the caller's
 * rnnd_parallel runs at once. No part splits a reduction: every element is computed by one
 * part exactly as with one thread, so the results do not depend on NT. */

typedef void (*stage_fn)(void *arg, size_t i);

static size_t par_threads(const rnnd_parallel *par)
{
    return par && par->run && par->threads > 1 ? par->threads : 1;
}

static void run_stage(const rnnd_parallel *par, size_t nt, stage_fn fn, void *arg)
{
    if (nt <= 1)
        fn(arg, 0);
    else
        par->run(par->ctx, fn, arg, nt);
}

/* Part I of NT of [0, n), cut at multiples of UNIT. */
static void part(size_t n, size_t unit, size_t i, size_t nt, size_t *b, size_t *e)
{
    size_t units = (n + unit - 1) / unit;
    size_t ub = units * i / nt, ue = units * (i + 1) / nt;
    *b = ub * unit < n ? ub * unit : n;
    *e = ue * unit < n ? ue * unit : n;
}

/* The gemv of W's row panels in part I of NT; [*r0, *r1) are the rows written. */
static void gemv_part(const rnnd_kernels *k, const rnnd_packed *W, const float *bias,
                      const float *X, size_t ldx, size_t B, float *Y, size_t ldy, size_t i,
                      size_t nt, size_t *r0, size_t *r1)
{
    part((size_t)W->rows, RNND_PANEL, i, nt, r0, r1);
    if (*r1 > *r0)
        k->gemv(W, bias, X, ldx, B, Y, ldy, (int)*r0, (int)*r1);
}

/* ---- cells ----------------------------------------------------------------------------
 * A cell advances NB rows one step. GX holds the input projection (bias Wb included) with
 * row stride LDGX, or, when X is set, the first stage computes it from X (step path); HP/CP
 * are the previous h and c of each row (strides LDHP/LDCP); the new h and c go to HN/CN. CN
 * may be CP (each element of c is read before it is written); HN never aliases HP. GH, T1, T2
 * are scratch. */

typedef struct cell_io {
    size_t nb;
    float *gx;
    size_t ldgx;
    const float *x;
    size_t ldx;
    const float *hp;
    size_t ldhp;
    const float *cp;
    size_t ldcp;
    const float *cl;
    size_t ldcl; /* depth gate: the layer below's new c; else NULL */
    float *hn;
    size_t ldhn;
    float *cn;
    size_t ldcn;
    const uint64_t *tc; /* clockwork: each row's step counter t before this step */
} cell_io;

typedef struct cell_job {
    const rnnd_net *n;
    const rnnd_layer_spec *L;
    const dir_pack *p;
    const rnnd_dir_weights *w;
    int d;
    cell_io io;
    float *gh, *t1, *t2;
    size_t nt;
} cell_job;

/* Stage 1 of every cell: the input projection (if asked) and R h, rows of part I. */
static void gates_part(const cell_job *c, const rnnd_packed *R, size_t ldgh, size_t i, size_t *r0,
                       size_t *r1)
{
    const rnnd_kernels *k = c->n->k;
    const cell_io *io = &c->io;
    if (io->x)
        gemv_part(k, &c->p->W, c->p->wb ? c->p->wb : c->w->Wb, io->x, io->ldx, io->nb, io->gx,
                  io->ldgx, i, c->nt, r0, r1);
    gemv_part(k, R, c->w->Rb, io->hp, io->ldhp, io->nb, c->gh, ldgh, i, c->nt, r0, r1);
}

/* Elman and Jordan stage 1: gates and activation of rows [r0, r1) (W and R have H rows and
 * are cut alike). Elman writes h. */
static void rnn_stage1(void *arg, size_t i)
{
    const cell_job *c = arg;
    const cell_io *io = &c->io;
    size_t H = (size_t)c->L->hidden, r0, r1;
    gates_part(c, &c->p->R, H, i, &r0, &r1);
    for (size_t b = 0; b < io->nb; b++) {
        const float *gx = io->gx + b * io->ldgx;
        float *g = c->gh + b * H;
        for (size_t j = r0; j < r1; j++)
            g[j] = gx[j] + g[j];
        clip_inplace(c->L, g + r0, r1 - r0);
        c->n->k->act(&c->L->act[c->d][0], g + r0, r1 - r0);
        if (c->L->cell == RNND_CELL_RNN)
            memcpy(io->hn + b * io->ldhn + r0, g + r0, (r1 - r0) * sizeof(float));
    }
}

/* Jordan stage 2: y = act2(V h + Vb), rows [r0, r1) of O. */
static void jordan_stage2(void *arg, size_t i)
{
    const cell_job *c = arg;
    const cell_io *io = &c->io;
    size_t H = (size_t)c->L->hidden, O = (size_t)c->L->output_size, r0, r1;
    gemv_part(c->n->k, &c->p->V, c->w->Vb, c->gh, H, io->nb, c->t1, O, i, c->nt, &r0, &r1);
    for (size_t b = 0; b < io->nb; b++) {
        float *y = c->t1 + b * O;
        c->n->k->act(&c->L->act[c->d][1], y + r0, r1 - r0);
        memcpy(io->hn + b * io->ldhn + r0, y + r0, (r1 - r0) * sizeof(float));
    }
}

/* GRU stage 1: W x, the z and r rows of R h, and (lbr 1) Rh h + Rbh into T1. */
static void gru_stage1(void *arg, size_t i)
{
    const cell_job *c = arg;
    const cell_io *io = &c->io;
    size_t H = (size_t)c->L->hidden, r0, r1;
    gates_part(c, &c->p->R, 2 * H, i, &r0, &r1);
    if (c->L->linear_before_reset)
        gemv_part(c->n->k, &c->p->Rh, c->w->Rb + 2 * H, io->hp, io->ldhp, io->nb, c->t1, H, i,
                  c->nt, &r0, &r1);
}

static rnnd_gru_math gru_math(const cell_job *c)
{
    const rnnd_layer_spec *L = c->L;
    return (rnnd_gru_math){
        .H = (size_t)L->hidden,
        .linear_before_reset = L->linear_before_reset,
        .has_clip = L->has_clip,
        .clip = L->clip,
        .af = &L->act[c->d][0],
        .ag = &L->act[c->d][1],
    };
}

/* GRU: the candidate and the new h of rows [b0, b1), hidden units [j0, j1); T1 holds its
 * recurrent term. */
static void gru_finish(const cell_job *c, size_t b0, size_t b1, size_t j0, size_t j1)
{
    const cell_io *io = &c->io;
    const rnnd_gru_math m = gru_math(c);
    size_t H = m.H;
    for (size_t b = b0; b < b1; b++)
        c->n->k->gru_finish(&m, io->gx + b * io->ldgx + 2 * H, c->gh + b * 2 * H, c->t1 + b * H,
                            io->hp + b * io->ldhp, io->hn + b * io->ldhn, j0, j1);
}

/* Part I of a gate stage: rows [*b0, *b1) x hidden units [*j0, *j1). By rows when every
 * thread gets one: a thread then reads whole rows of gates, not the slices of them that the
 * other threads' gemv parts wrote. Each element's arithmetic is the same either way. */
static void gate_part(const cell_job *c, size_t i, size_t *b0, size_t *b1, size_t *j0, size_t *j1)
{
    size_t H = (size_t)c->L->hidden;
    if (c->io.nb >= c->nt) {
        part(c->io.nb, 1, i, c->nt, b0, b1);
        *j0 = 0;
        *j1 = H;
    } else {
        *b0 = 0;
        *b1 = c->io.nb;
        part(H, RNND_PANEL, i, c->nt, j0, j1);
    }
}

/* GRU stage 2, part I: z and r; then r * (Rh h + Rbh) and the new h (lbr 1), or r * h into
 * T2 for stage 3 (lbr 0). */
static void gru_stage2(void *arg, size_t i)
{
    const cell_job *c = arg;
    const cell_io *io = &c->io;
    const rnnd_gru_math m = gru_math(c);
    size_t H = m.H, b0, b1, j0, j1;
    gate_part(c, i, &b0, &b1, &j0, &j1);
    float *t = m.linear_before_reset ? c->t1 : c->t2;
    for (size_t b = b0; b < b1; b++)
        c->n->k->gru_gates(&m, io->gx + b * io->ldgx, c->gh + b * 2 * H, io->hp + b * io->ldhp,
                           t + b * H, j0, j1);
    if (m.linear_before_reset)
        gru_finish(c, b0, b1, j0, j1);
}

/* GRU (lbr 0) stage 3: Rh (r * h) + Rbh into T1. */
static void gru_stage3(void *arg, size_t i)
{
    const cell_job *c = arg;
    size_t H = (size_t)c->L->hidden, r0, r1;
    gemv_part(c->n->k, &c->p->Rh, c->w->Rb + 2 * H, c->t2, H, c->io.nb, c->t1, H, i, c->nt, &r0,
              &r1);
    if (c->nt == 1)
        gru_finish(c, 0, c->io.nb, r0, r1);
}

/* GRU (lbr 0) stage 4, with a team: the new h of part I (gate_part), a stage of its own so
 * that it reads whole rows rather than the other threads' slices of T1 and of z. */
static void gru_stage4(void *arg, size_t i)
{
    const cell_job *c = arg;
    size_t b0, b1, j0, j1;
    gate_part(c, i, &b0, &b1, &j0, &j1);
    gru_finish(c, b0, b1, j0, j1);
}

static void lstm_stage1(void *arg, size_t i)
{
    const cell_job *c = arg;
    size_t GH = (size_t)c->L->gates * c->L->hidden, r0, r1;
    gates_part(c, &c->p->R, GH, i, &r0, &r1);
}

/* LSTM stage 2: the gates, c and h of part I (gate_part), in the kernels' fused row. */
static void lstm_stage2(void *arg, size_t i)
{
    const cell_job *c = arg;
    const cell_io *io = &c->io;
    const rnnd_layer_spec *L = c->L;
    size_t H = (size_t)L->hidden, ld = (size_t)L->gates * H, b0, b1, j0, j1;
    const rnnd_lstm_math m = {
        .H = H,
        .forget_gate = L->forget_gate,
        .input_forget = L->input_forget,
        .has_clip = L->has_clip,
        .clip = L->clip,
        .P = L->peepholes ? c->w->P : NULL,
        .Dc = L->depth_gate ? c->w->Dc : NULL,
        .Dl = L->depth_gate ? c->w->Dl : NULL,
        .af = &L->act[c->d][0],
        .ag = &L->act[c->d][1],
        .ah = &L->act[c->d][2],
    };
    gate_part(c, i, &b0, &b1, &j0, &j1);
    if (j1 == j0)
        return;
    for (size_t b = b0; b < b1; b++) {
        float *dst = L->proj_size > 0 ? c->t1 + b * H : io->hn + b * io->ldhn;
        c->n->k->lstm_row(&m, io->gx + b * io->ldgx, c->gh + b * ld, io->cp + b * io->ldcp,
                          io->cl ? io->cl + b * io->ldcl : NULL, io->cn + b * io->ldcn, dst, j0,
                          j1);
    }
}

/* LSTM with proj_size, stage 3: hn = proj h (hn rows are strided; gemv writes with a row
 * stride, so project straight into them). */
static void lstm_stage3(void *arg, size_t i)
{
    const cell_job *c = arg;
    size_t r0, r1;
    gemv_part(c->n->k, &c->p->proj, NULL, c->t1, (size_t)c->L->hidden, c->io.nb, c->io.hn,
              c->io.ldhn, i, c->nt, &r0, &r1);
}

/* minGRU / minLSTM and clockwork stage 1 (step path only): the input projection, rows of
 * part I. */
static void min_stage1(void *arg, size_t i)
{
    const cell_job *c = arg;
    const cell_io *io = &c->io;
    size_t r0, r1;
    gemv_part(c->n->k, &c->p->W, c->w->Wb, io->x, io->ldx, io->nb, io->gx, io->ldgx, i, c->nt, &r0,
              &r1);
}

/* minGRU / minLSTM stage 2: the new h of part I (gate_part); the gates read only GX. */
static void min_stage2(void *arg, size_t i)
{
    const cell_job *c = arg;
    const cell_io *io = &c->io;
    const rnnd_layer_spec *L = c->L;
    const rnnd_min_math m = {
        .H = (size_t)L->hidden,
        .lstm = L->cell == RNND_CELL_MINLSTM,
        .af = &L->act[c->d][0],
        .ag = &L->act[c->d][1],
    };
    size_t b0, b1, j0, j1;
    gate_part(c, i, &b0, &b1, &j0, &j1);
    if (j1 == j0)
        return;
    for (size_t b = b0; b < b1; b++)
        c->n->k->min_row(&m, io->gx + b * io->ldgx, io->hp + b * io->ldhp, io->hn + b * io->ldhn,
                         j0, j1);
}

static int clock_active(const rnnd_layer_spec *L, int k, uint64_t t)
{
    return t % (uint64_t)L->periods[k] == 0;
}

/* Clockwork stage 2, part I: per module k, the rows of part I of its H/m: R_k h + Rb_k over
 * modules k.. only, then af(gx + g) for the batch rows whose counter runs module k; the other
 * rows keep h_prev. A module no row of the batch runs is not multiplied at all. A row's
 * result never depends on the others: the product is computed the same way for every row,
 * and only its own counter picks what it keeps. */
static void clock_stage2(void *arg, size_t i)
{
    const cell_job *c = arg;
    const cell_io *io = &c->io;
    const rnnd_layer_spec *L = c->L;
    const rnnd_kernels *kern = c->n->k;
    size_t H = (size_t)L->hidden, hm = H / (size_t)L->n_periods;
    for (int k = 0; k < L->n_periods; k++) {
        size_t a, e, off = (size_t)k * hm;
        part(hm, RNND_PANEL, i, c->nt, &a, &e);
        if (e == a)
            continue;
        int any = 0;
        for (size_t b = 0; b < io->nb && !any; b++)
            any = clock_active(L, k, io->tc[b]);
        if (any)
            kern->gemv(&c->p->Rmod[k], c->w->Rb + off, io->hp + off, io->ldhp, io->nb, c->gh + off,
                       H, (int)a, (int)e);
        for (size_t b = 0; b < io->nb; b++) {
            float *hn = io->hn + b * io->ldhn + off;
            if (clock_active(L, k, io->tc[b]))
                kern->clock_row(&L->act[c->d][0], io->gx + b * io->ldgx + off, c->gh + b * H + off,
                                hn, a, e);
            else
                memcpy(hn + a, io->hp + b * io->ldhp + off + a, (e - a) * sizeof(float));
        }
    }
}

/* sLSTM stage 1: W x (if asked) by W's row panels, and the block-diagonal R h + Rb by whole
 * blocks (gate g, head k: d rows of G from h[k*d, (k+1)*d)), part I of each. */
static void slstm_stage1(void *arg, size_t i)
{
    const cell_job *c = arg;
    const cell_io *io = &c->io;
    const rnnd_kernels *k = c->n->k;
    const dir_pack *p = c->p;
    size_t H = (size_t)c->L->hidden, K = (size_t)c->L->heads, d = H / K, r0, r1, b0, b1;
    if (io->x)
        gemv_part(k, &p->W, c->w->Wb, io->x, io->ldx, io->nb, io->gx, io->ldgx, i, c->nt, &r0, &r1);
    part((size_t)p->n_rblk, 1, i, c->nt, &b0, &b1);
    for (size_t b = b0; b < b1; b++) {
        size_t off = (b / K) * H + (b % K) * d;
        k->gemv(&p->Rblk[b], c->w->Rb + off, io->hp + (b % K) * d, io->ldhp, io->nb, c->gh + off,
                4 * H, 0, (int)d);
    }
}

/* sLSTM stage 2: the gates, c, n, m and h of part I (gate_part), in the kernels' row. */
static void slstm_stage2(void *arg, size_t i)
{
    const cell_job *c = arg;
    const cell_io *io = &c->io;
    const rnnd_slstm_math m = {.H = (size_t)c->L->hidden, .exp_forget = c->L->exp_forget};
    size_t b0, b1, j0, j1;
    gate_part(c, i, &b0, &b1, &j0, &j1);
    if (j1 == j0)
        return;
    for (size_t b = b0; b < b1; b++)
        c->n->k->slstm_row(&m, io->gx + b * io->ldgx, c->gh + b * 4 * m.H, io->cp + b * io->ldcp,
                           io->cn + b * io->ldcn, io->hn + b * io->ldhn, j0, j1);
}

/* The stages of cell job C, each split into C->nt parts (PAR may be NULL when nt is 1). */
static void run_cell_stages(const rnnd_parallel *par, cell_job *c)
{
    const rnnd_layer_spec *L = c->L;
    switch (L->cell) {
    case RNND_CELL_RNN: run_stage(par, c->nt, rnn_stage1, c); break;
    case RNND_CELL_JORDAN:
        run_stage(par, c->nt, rnn_stage1, c);
        run_stage(par, c->nt, jordan_stage2, c);
        break;
    case RNND_CELL_GRU:
        run_stage(par, c->nt, gru_stage1, c);
        run_stage(par, c->nt, gru_stage2, c);
        if (!L->linear_before_reset) {
            run_stage(par, c->nt, gru_stage3, c);
            if (c->nt > 1)
                run_stage(par, c->nt, gru_stage4, c);
        }
        break;
    case RNND_CELL_MINGRU:
    case RNND_CELL_MINLSTM:
        if (c->io.x)
            run_stage(par, c->nt, min_stage1, c);
        run_stage(par, c->nt, min_stage2, c);
        break;
    case RNND_CELL_CLOCKWORK:
        if (c->io.x)
            run_stage(par, c->nt, min_stage1, c);
        run_stage(par, c->nt, clock_stage2, c);
        break;
    case RNND_CELL_SLSTM:
        run_stage(par, c->nt, slstm_stage1, c);
        run_stage(par, c->nt, slstm_stage2, c);
        break;
    case RNND_CELL_LSTM:
        run_stage(par, c->nt, lstm_stage1, c);
        run_stage(par, c->nt, lstm_stage2, c);
        if (L->proj_size > 0)
            run_stage(par, c->nt, lstm_stage3, c);
        break;
    }
}

/* When a team splits a step by batch rows rather than stage by stage: each thread then runs
 * the whole cell for its rows with no barrier in between, at the price of every thread
 * reading all the weights. That pays once each thread has enough rows to reuse them and the
 * weights come from cache; with 2 threads, B = 64 (bench, 2026-11-23): GRU H = 256 +43%,
 * H = 512 +12%, LSTM H = 512 +8%; but with 24-32 MiB of weights (H = 1024) -12%. */
#ifndef ROW_SPLIT_MIN
#define ROW_SPLIT_MIN 16 /* batch rows per thread */
#endif
#define ROW_SPLIT_MAX_WEIGHTS (12u << 20) /* bytes of W and R (and Rh, or R's modules) */

static size_t packed_bytes(const rnnd_packed *p)
{
    return (size_t)p->rows * (size_t)p->cols *
        (p->type == RNND_WEIGHTS_F32      ? 4
             : p->type == RNND_WEIGHTS_I8 ? 1
                                          : 2);
}

static int split_by_rows(const cell_job *c)
{
    if (c->nt <= 1 || c->io.nb < ROW_SPLIT_MIN * c->nt)
        return 0;
    size_t bytes = packed_bytes(&c->p->W) + packed_bytes(&c->p->R) + packed_bytes(&c->p->Rh);
    for (int k = 0; k < c->p->n_mod; k++) /* clockwork: R is packed per module */
        bytes += packed_bytes(&c->p->Rmod[k]);
    for (int b = 0; b < c->p->n_rblk; b++)
        bytes += packed_bytes(&c->p->Rblk[b]);
    return bytes <= ROW_SPLIT_MAX_WEIGHTS;
}

/* Part I of a row-split cell: the whole cell, one thread, for its batch rows. Each row's
 * scratch and state are its own, so a row's arithmetic is exactly that of one thread. */
static void cell_rows_stage(void *arg, size_t i)
{
    const cell_job *c = arg;
    const rnnd_layer_spec *L = c->L;
    size_t b0, b1;
    part(c->io.nb, 1, i, c->nt, &b0, &b1);
    if (b1 == b0)
        return;
    size_t H = (size_t)L->hidden;
    size_t ldgh = L->cell == RNND_CELL_LSTM || L->cell == RNND_CELL_SLSTM ? (size_t)L->gates * H
        : L->cell == RNND_CELL_GRU                                        ? 2 * H
                                                                          : H;
    size_t ldt1 = L->cell == RNND_CELL_JORDAN ? (size_t)L->output_size : H;
    cell_job s = *c;
    s.nt = 1;
    s.io.nb = b1 - b0;
    s.io.gx += b0 * s.io.ldgx;
    if (s.io.x)
        s.io.x += b0 * s.io.ldx;
    s.io.hp += b0 * s.io.ldhp;
    if (s.io.cp)
        s.io.cp += b0 * s.io.ldcp;
    s.io.hn += b0 * s.io.ldhn;
    if (s.io.cn)
        s.io.cn += b0 * s.io.ldcn;
    if (s.io.cl)
        s.io.cl += b0 * s.io.ldcl;
    if (s.io.tc)
        s.io.tc += b0;
    if (s.gh)
        s.gh += b0 * ldgh;
    if (s.t1)
        s.t1 += b0 * ldt1;
    if (s.t2)
        s.t2 += b0 * H;
    run_cell_stages(NULL, &s);
}

static void run_cell(const rnnd_net *n, int l, int d, const cell_io *io, float *gh, float *t1,
                     float *t2, const rnnd_parallel *par)
{
    const rnnd_layer_spec *L = &n->spec->layers[l];
    cell_job c = {
        .n = n,
        .L = L,
        .p = &n->packs[l][d],
        .w = &L->w[d],
        .d = d,
        .io = *io,
        .gh = gh,
        .t1 = t1,
        .t2 = t2,
        .nt = par_threads(par),
    };
    if (split_by_rows(&c))
        run_stage(par, c.nt, cell_rows_stage, &c);
    else
        run_cell_stages(par, &c);
}

/* Y [N, rows] = X W^T + bias over N rows, split by row panels; then each row normalized. */
typedef struct proj_job {
    const rnnd_kernels *k;
    const rnnd_packed *W;
    const float *bias, *X;
    size_t ldx, N, ldy, nt;
    float *Y;
    int norm;
} proj_job;

static void proj_stage(void *arg, size_t i)
{
    const proj_job *j = arg;
    size_t r0, r1;
    gemv_part(j->k, j->W, j->bias, j->X, j->ldx, j->N, j->Y, j->ldy, i, j->nt, &r0, &r1);
}

static void norm_stage(void *arg, size_t i)
{
    const proj_job *j = arg;
    size_t b0, b1;
    part(j->N, 1, i, j->nt, &b0, &b1);
    for (size_t b = b0; b < b1; b++)
        normalize_row(j->norm, j->Y + b * j->ldy, j->W->rows);
}

static void project(const rnnd_net *n, const rnnd_packed *W, const float *bias, const float *X,
                    size_t ldx, size_t N, float *Y, size_t ldy, int norm, const rnnd_parallel *par)
{
    proj_job j = {
        .k = n->k,
        .W = W,
        .bias = bias,
        .X = X,
        .ldx = ldx,
        .N = N,
        .ldy = ldy,
        .Y = Y,
        .norm = norm,
        .nt = par_threads(par),
    };
    run_stage(par, j.nt, proj_stage, &j);
    if (norm != RNND_NORM_NONE) {
        j.nt = j.nt < N ? j.nt : N;
        run_stage(par, j.nt, norm_stage, &j);
    }
}

/* ---- the head ---------------------------------------------------------------------------
 * Each head layer goes over every row; a row's result depends only on that row (the linear
 * layers are the gemv chain, the elementwise layers and the norm run per row in index order),
 * so a session's step equals infer's row for that step bit for bit, whatever the batch. */

/* GELU and its tanh form as PyTorch's CPU kernels write them, one scalar loop for every SIMD
 * path (libm's erff / tanhf), so the paths agree bitwise. */
static float gelu(float x) { return (x * 0.5f) * (1.0f + erff(x * 0.70710678118654752440f)); }

static float gelu_tanh(float x)
{
    const float beta = 0.79788456080286535588f; /* sqrt(2 / pi) */
    float inner = beta * (x + 0.044715f * ((x * x) * x));
    return (0.5f * x) * (1.0f + tanhf(inner));
}

/* LayerNorm over one row: mean and variance (biased, as PyTorch) summed in index order in
 * double, then each element in float. */
static void layernorm_row(const rnnd_head_layer *h, float *v)
{
    int n = h->in_dim;
    double sum = 0.0, sq = 0.0;
    for (int i = 0; i < n; i++)
        sum += v[i];
    double mean = sum / n;
    for (int i = 0; i < n; i++)
        sq += (v[i] - mean) * (v[i] - mean);
    float m = (float)mean;
    float rstd = (float)(1.0 / sqrt(sq / n + (double)h->eps));
    for (int i = 0; i < n; i++) {
        float y = (v[i] - m) * rstd;
        v[i] = h->affine ? y * h->W[i] + h->b[i] : y;
    }
}

typedef struct head_job {
    const rnnd_kernels *k;
    const rnnd_head_layer *h; /* NULL: the norm */
    int norm, width;
    float *Y;
    size_t N, nt;
} head_job;

static void head_rows_stage(void *arg, size_t i)
{
    const head_job *j = arg;
    size_t b0, b1;
    part(j->N, 1, i, j->nt, &b0, &b1);
    for (size_t b = b0; b < b1; b++) {
        float *v = j->Y + b * (size_t)j->width;
        if (!j->h) {
            normalize_row(j->norm, v, j->width);
            continue;
        }
        rnnd_activation a = {0};
        switch (j->h->op) {
        case RNND_HEAD_RELU: a.kind = RNND_ACT_RELU; break;
        case RNND_HEAD_TANH: a.kind = RNND_ACT_TANH; break;
        case RNND_HEAD_SIGMOID: a.kind = RNND_ACT_SIGMOID; break;
        case RNND_HEAD_GELU:
            for (int x = 0; x < j->width; x++)
                v[x] = gelu(v[x]);
            continue;
        case RNND_HEAD_GELU_TANH:
            for (int x = 0; x < j->width; x++)
                v[x] = gelu_tanh(v[x]);
            continue;
        case RNND_HEAD_LAYERNORM: layernorm_row(j->h, v); continue;
        default: continue;
        }
        j->k->act(&a, v, (size_t)j->width);
    }
}

/* Rows-parallel pass of H (or the norm when H is NULL) over N rows of WIDTH in Y. */
static void head_rows(const rnnd_net *n, const rnnd_head_layer *h, int norm, int width, float *Y,
                      size_t N, const rnnd_parallel *par)
{
    head_job j = {
        .k = n->k, .h = h, .norm = norm, .width = width, .Y = Y, .N = N, .nt = par_threads(par)};
    j.nt = j.nt < N ? j.nt : N;
    run_stage(par, j.nt, head_rows_stage, &j);
}

/* Linear head layer K: Y [N, out] = X [N, in] W^T + b. OpenBLAS (opt-in) only on the
 * whole-sequence path, as for the input projection. */
static void head_linear(const rnnd_net *n, int k, const float *X, size_t N, float *Y, int blas,
                        const rnnd_parallel *par)
{
    const rnnd_head_layer *h = &n->spec->head_layers[k];
    size_t K = (size_t)h->out_dim;
    if (!blas) {
        project(n, &n->head[k], h->b, X, (size_t)h->in_dim, N, Y, K, RNND_NORM_NONE, par);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, h->out_dim, h->in_dim, 1.0f, X,
                h->in_dim, h->W, h->in_dim, 0.0f, Y, h->out_dim);
    for (size_t r = 0; r < N; r++)
        for (size_t j = 0; j < K; j++)
            Y[r * K + j] = Y[r * K + j] + h->b[j];
}

/* The head over N contiguous rows of head_in floats in CUR; OTHER has room for N rows of any
 * head width (CUR too: both are overwritten). The N rows of head_out go to FINAL, or when
 * FINAL is NULL stay in CUR or OTHER: the buffer returned. */
static float *run_head(const rnnd_net *n, float *cur, float *other, float *final, size_t N,
                       const rnnd_parallel *par)
{
    const rnnd_model_spec *s = n->spec;
    int blas = n->use_openblas && !final; /* final: the step path */
    for (int k = 0; k < s->head_n; k++) {
        const rnnd_head_layer *h = &s->head_layers[k];
        float *dst = k == s->head_n - 1 && final ? final : NULL;
        if (h->op == RNND_HEAD_LINEAR) {
            dst = dst ? dst : other;
            head_linear(n, k, cur, N, dst, blas, par);
            other = cur;
            cur = dst;
            continue;
        }
        if (dst) {
            memcpy(dst, cur, N * (size_t)h->in_dim * sizeof(float));
            cur = dst;
        }
        head_rows(n, h, 0, h->in_dim, cur, N, par);
    }
    if (s->head_norm != RNND_NORM_NONE)
        head_rows(n, NULL, s->head_norm, s->head_out, cur, N, par);
    return cur;
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
    if (n->depth_gated)
        w->c2 = malloc(max_batch * (size_t)imax(n->max_hidden, 1) * sizeof(float));
    w->tc = malloc(max_batch * sizeof *w->tc);
    if (!w->x || !w->y || !w->h || !w->gx || !w->gh || !w->t1 || !w->t2 || !w->tc ||
        (n->depth_gated && !w->c2)) {
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
    free(w->c2);
    free(w->tc);
    free(w);
}

static int check_tokens(const rnnd_model_spec *s, size_t B, const int32_t *tokens, char *err,
                        size_t errlen)
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
                  const float *vectors, float *const *states, float *out, char *err, size_t errlen)
{
    return rnnd_net_step_par(n, w, B, tokens, vectors, states, out, NULL, err, errlen);
}

int rnnd_net_step_par(const rnnd_net *n, rnnd_work *w, size_t B, const int32_t *tokens,
                      const float *vectors, float *const *states, float *out,
                      const rnnd_parallel *par, char *err, size_t errlen)
{
    const rnnd_model_spec *s = n->spec;
    if (!n->stateful) {
        snprintf(err, errlen,
                 "the model has reverse or bidirectional layers: it runs only "
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
        size_t O = (size_t)L->out_dim, GH = gx_width(L);
        size_t off = n->state_off[l * 2];
        /* with depth gates an lstm's c goes to t2 or c2 by turns, so a gated layer reads
         * the new c of the one below where that left it */
        float *cbuf = l & 1 && w->c2 ? w->c2 : w->t2, *clow = l & 1 ? w->t2 : w->c2;
        for (size_t b = 0; b < B; b++)
            memcpy(w->h + b * O, states[b] + off, O * sizeof(float));
        cell_io io = {
            .nb = B,
            .gx = w->gx,
            .ldgx = GH,
            .x = x,
            .ldx = ldx,
            .hp = w->h,
            .ldhp = O,
            .hn = ybuf,
            .ldhn = O,
        };
        size_t C = rnnd_layer_cell_floats(L);
        if (C) {
            /* gather c (lstm; slstm c, n, m) into CBUF (t2, which neither cell uses otherwise,
             * or c2) and scatter it back after */
            for (size_t b = 0; b < B; b++)
                memcpy(cbuf + b * C, states[b] + off + O, C * sizeof(float));
            io.cp = cbuf;
            io.ldcp = C;
            io.cn = cbuf;
            io.ldcn = C;
            if (L->depth_gate) {
                io.cl = clow; /* layer l - 1 is an lstm of the same H */
                io.ldcl = C;
            }
        }
        int clock = L->cell == RNND_CELL_CLOCKWORK;
        if (clock) {
            for (size_t b = 0; b < B; b++)
                w->tc[b] = rnnd_clock_get(states[b] + off + O);
            io.tc = w->tc;
        }
        run_cell(n, l, 0, &io, w->gh, w->t1, w->t2, par);
        for (size_t b = 0; b < B; b++) {
            memcpy(states[b] + off, ybuf + b * O, O * sizeof(float));
            if (C)
                memcpy(states[b] + off + O, cbuf + b * C, C * sizeof(float));
            if (clock)
                rnnd_clock_put(states[b] + off + O, w->tc[b] + 1);
        }
        x = ybuf;
        ldx = O;
        float *t = ybuf;
        ybuf = xbuf;
        xbuf = t;
    }
    if (out) {
        if (s->has_head) {
            /* a model has a layer at least: the last one's rows are in XBUF (x == xbuf) */
            run_head(n, xbuf, ybuf, out, B, par);
        } else {
            for (size_t b = 0; b < B; b++)
                memcpy(out + b * ldx, x + b * ldx, ldx * sizeof(float));
        }
    }
    return RNND_OK;
}

/* ---- the whole-sequence path -----------------------------------------------------------
 * Rows are laid out time-major: sequences sorted longest first (slot i), and the rows of
 * step t are start[t] .. start[t] + nb(t) - 1, one per sequence still running at t (always
 * slots 0 .. nb(t) - 1, since the running ones are a prefix of the sorted order). So a
 * forward direction reads its step's input projection, its previous h and writes its new h
 * in place, rows already contiguous: nothing is gathered or scattered per step. */

struct seq_ws {
    size_t cap_b, cap_n, cap_t;
    float *X, *Y, *gx_all;         /* [N, wide], [N, wide], [N, max_gates] */
    float *gxb, *gh, *hcur, *hnew; /* [B, max_gates] x 2, [B, wide] x 2 */
    float *ccur, *t1, *t2;         /* [B, max_hidden] */
    float *cseq[2];                /* depth gates: [N, max_hidden] each, the c of every step
                                     * of an lstm below one, then of the next such lstm */
    size_t *order;                 /* [B] sequence of slot i */
    uint64_t *t0, *tc;             /* [B] clockwork: slot i's counter at step 0, at step t */
    size_t *start;                 /* [maxlen + 1] first row of step t */
    size_t bytes;
};

static void seq_ws_free(seq_ws *ws)
{
    if (!ws)
        return;
    free(ws->X);
    free(ws->Y);
    free(ws->gx_all);
    free(ws->gxb);
    free(ws->gh);
    free(ws->hcur);
    free(ws->hnew);
    free(ws->ccur);
    free(ws->t1);
    free(ws->t2);
    free(ws->cseq[0]);
    free(ws->cseq[1]);
    free(ws->order);
    free(ws->t0);
    free(ws->tc);
    free(ws->start);
    free(ws);
}

/* Replace *P by room for A * B floats (contents not kept); 0 or -1. */
static int regrow(float **p, size_t a, size_t b)
{
    size_t n;
    if (__builtin_mul_overflow(a, b ? b : 1, &n) || n > SIZE_MAX / sizeof(float))
        return -1;
    free(*p);
    *p = malloc((n ? n : 1) * sizeof(float));
    return *p ? 0 : -1;
}

/* A * B + C * D (in floats) in bytes, or SIZE_MAX on overflow. */
static size_t floats_bytes(size_t a, size_t b, size_t c, size_t d)
{
    size_t x, y, z;
    if (__builtin_mul_overflow(a, b, &x) || __builtin_mul_overflow(c, d, &y) ||
        __builtin_add_overflow(x, y, &z) || __builtin_mul_overflow(z, sizeof(float), &z))
        return SIZE_MAX;
    return z;
}

size_t rnnd_net_forward_bytes(const rnnd_net *n, size_t B, size_t N, size_t T)
{
    /* what seq_ws_reserve() allocates for these sizes */
    size_t wide = (size_t)imax(imax(n->max_in, n->max_out), 1);
    size_t gates = (size_t)imax(n->max_gates, 1), hid = (size_t)imax(n->max_hidden, 1);
    size_t per_row = 2 * wide + gates + (n->depth_gated ? 2 * hid : 0);
    size_t rows = floats_bytes(N, per_row, B, 2 * gates + 2 * wide + 3 * hid);
    size_t idx, all;
    if (rows == SIZE_MAX || __builtin_add_overflow(3 * B, T, &idx) ||
        __builtin_mul_overflow(idx + 1, sizeof(size_t), &idx) ||
        __builtin_add_overflow(rows, idx, &all))
        return SIZE_MAX;
    return all;
}

/* Make WS hold B sequences, N rows and T steps. */
static int seq_ws_reserve(const rnnd_net *n, seq_ws *ws, size_t B, size_t N, size_t T)
{
    size_t wide = (size_t)imax(imax(n->max_in, n->max_out), 1);
    size_t gates = (size_t)imax(n->max_gates, 1), hid = (size_t)imax(n->max_hidden, 1);
    size_t cseq = n->depth_gated ? hid : 0;
    if (N > ws->cap_n) {
        ws->cap_n = 0;
        if (regrow(&ws->X, N, wide) || regrow(&ws->Y, N, wide) || regrow(&ws->gx_all, N, gates) ||
            (cseq && (regrow(&ws->cseq[0], N, cseq) || regrow(&ws->cseq[1], N, cseq))))
            return -1;
        ws->cap_n = N;
    }
    if (B > ws->cap_b) {
        ws->cap_b = 0;
        free(ws->order);
        free(ws->t0);
        free(ws->tc);
        ws->order = NULL;
        ws->t0 = ws->tc = NULL;
        if (!(ws->t0 = malloc(B * sizeof *ws->t0)) || !(ws->tc = malloc(B * sizeof *ws->tc)))
            return -1;
        if (regrow(&ws->gxb, B, gates) || regrow(&ws->gh, B, gates) || regrow(&ws->hcur, B, wide) ||
            regrow(&ws->hnew, B, wide) || regrow(&ws->ccur, B, hid) || regrow(&ws->t1, B, hid) ||
            regrow(&ws->t2, B, hid) || !(ws->order = malloc(B * sizeof *ws->order)))
            return -1;
        ws->cap_b = B;
    }
    if (T + 1 > ws->cap_t) {
        free(ws->start);
        ws->cap_t = 0;
        if (!(ws->start = malloc((T + 1) * sizeof *ws->start)))
            return -1;
        ws->cap_t = T + 1;
    }
    ws->bytes =
        (ws->cap_n * (2 * wide + gates + 2 * cseq) + ws->cap_b * (2 * gates + 2 * wide + 3 * hid)) *
        sizeof(float);
    return 0;
}

/* A workspace from the net's cache, or a new empty one (NULL when out of memory). */
static seq_ws *seq_ws_get(const rnnd_net *n)
{
    seq_ws *ws = NULL;
    pthread_mutex_lock(&n->cache->mu);
    if (n->cache->n_free > 0)
        ws = n->cache->free[--n->cache->n_free];
    pthread_mutex_unlock(&n->cache->mu);
    return ws ? ws : calloc(1, sizeof *ws);
}

/* Back to the cache, unless the cache is full or WS is too big to keep around. */
static void seq_ws_put(const rnnd_net *n, seq_ws *ws)
{
    if (!ws)
        return;
    if (ws->bytes <= WS_KEEP_BYTES) {
        pthread_mutex_lock(&n->cache->mu);
        if (n->cache->n_free < WS_CACHE_N) {
            n->cache->free[n->cache->n_free++] = ws;
            ws = NULL;
        }
        pthread_mutex_unlock(&n->cache->mu);
    }
    seq_ws_free(ws);
}

typedef struct seq_plan {
    size_t B, N, maxlen;
    const size_t *lens;
    const size_t *order; /* slot -> sequence */
    const size_t *start; /* step -> first row */
} seq_plan;

static size_t plan_nb(const seq_plan *sp, size_t t) { return sp->start[t + 1] - sp->start[t]; }

/* CTX: the address of a const size_t * to the lengths (qsort_r's context is a void *). */
static int cmp_len_desc(const void *a, const void *b, void *ctx)
{
    const size_t *lens = *(const size_t **)ctx;
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    if (lens[x] != lens[y])
        return lens[x] > lens[y] ? -1 : 1;
    return x < y ? -1 : (x > y);
}

/* X [N, in] -> GX [N, G*H] = X W^T + Wb: one product over every step of every sequence. Our
 * own kernel gives each element exactly the sum the step path computes, so whole sequences
 * equal step-by-step runs bit for bit; OpenBLAS (opt-in) is a little faster on big products
 * but rounds differently. */
static void input_projection(const rnnd_net *n, int l, int d, const float *X, size_t N, float *GX,
                             const rnnd_parallel *par)
{
    const rnnd_layer_spec *L = &n->spec->layers[l];
    const rnnd_dir_weights *w = &L->w[d];
    const dir_pack *p = &n->packs[l][d];
    int GH = L->gates * L->hidden, ld = (int)gx_width(L);
    if (!n->use_openblas) {
        project(n, &p->W, p->wb ? p->wb : w->Wb, X, (size_t)L->in_dim, N, GX, (size_t)ld,
                RNND_NORM_NONE, par);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, GH, L->in_dim, 1.0f, X, L->in_dim,
                w->W, L->in_dim, 0.0f, GX, ld);
    if (L->depth_gate)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, L->hidden, L->in_dim, 1.0f, X,
                    L->in_dim, w->D, L->in_dim, 0.0f, GX + GH, ld);
    const float *bias = p->wb ? p->wb : w->Wb;
    for (size_t r = 0; r < N; r++) {
        float *g = GX + r * (size_t)ld;
        for (int j = 0; j < ld; j++)
            g[j] = g[j] + bias[j];
    }
}

/* Pool each sequence's rows of X [N, ldx] into P [B, ldx] (slot i in row i). Each element
 * is reduced over the steps in step order, whatever the batch, so a sequence's pooled row is
 * bitwise the same alone or in any batch. final_state takes, per direction, the output of
 * the last step that direction reads: step len-1 forward, step 0 reverse. */
static void pool_rows(const rnnd_model_spec *s, const seq_plan *sp, const float *X, size_t ldx,
                      float *P)
{
    const rnnd_layer_spec *L = &s->layers[s->n_layers - 1];
    size_t O = (size_t)L->out_dim;
    for (size_t i = 0; i < sp->B; i++) {
        size_t len = sp->lens[sp->order[i]];
        float *p = P + i * ldx;
        const float *first = X + (sp->start[0] + i) * ldx;
        const float *last = X + (sp->start[len - 1] + i) * ldx;
        switch (s->pool) {
        case RNND_POOL_LAST: memcpy(p, last, ldx * sizeof(float)); break;
        case RNND_POOL_FINAL_STATE:
            for (int d = 0; d < L->num_directions; d++) {
                int rev = L->direction == RNND_DIR_REVERSE || d == 1;
                memcpy(p + (size_t)d * O, (rev ? first : last) + (size_t)d * O, O * sizeof(float));
            }
            break;
        case RNND_POOL_MEAN:
        case RNND_POOL_MAX:
            memcpy(p, first, ldx * sizeof(float));
            for (size_t t = 1; t < len; t++) {
                const float *x = X + (sp->start[t] + i) * ldx;
                for (size_t j = 0; j < ldx; j++) {
                    if (s->pool == RNND_POOL_MEAN)
                        p[j] += x[j];
                    else if (x[j] > p[j] || isnan(x[j]))
                        p[j] = x[j]; /* NaN propagates, as torch.max does */
                }
            }
            if (s->pool == RNND_POOL_MEAN)
                for (size_t j = 0; j < ldx; j++)
                    p[j] /= (float)len;
            break;
        default: break;
        }
    }
}

static int stopping(const rnnd_parallel *par)
{
    return par && par->stop && atomic_load_explicit(par->stop, memory_order_relaxed);
}

/* One direction of layer L over every sequence; RNND_ERR_STOPPED when PAR says stop. */
static int run_direction(const rnnd_net *n, int l, int d, const seq_plan *sp, const float *X,
                         float *Y, const float *const *init, float *const *final, seq_ws *ws,
                         const rnnd_parallel *par)
{
    const rnnd_layer_spec *L = &n->spec->layers[l];
    size_t O = (size_t)L->out_dim, H = (size_t)L->hidden, GH = gx_width(L);
    size_t C = rnnd_layer_cell_floats(L); /* lstm c; slstm c, n, m */
    size_t ldy = O * (size_t)L->num_directions;
    size_t soff = n->state_off[l * 2 + d];
    int clock = L->cell == RNND_CELL_CLOCKWORK;
    /* depth gates: this layer's c of every step for the layer above, and the layer below's
     * for this one (both forward: validated), rows laid out like Y's */
    const rnnd_model_spec *s = n->spec;
    float *keep_c = l + 1 < s->n_layers && s->layers[l + 1].depth_gate ? ws->cseq[l & 1] : NULL;
    const float *low_c = L->depth_gate ? ws->cseq[(l + 1) & 1] : NULL;
    int reversed = L->direction == RNND_DIR_REVERSE || d == 1;
    float *Yd = Y + (size_t)d * O;

    input_projection(n, l, d, X, sp->N, ws->gx_all, par);
    for (size_t i = 0; i < sp->B; i++) {
        size_t b = sp->order[i];
        const float *st = init && init[b] ? init[b] + soff : NULL;
        ws->t0[i] = st && clock ? rnnd_clock_get(st + O) : 0;
        if (st) {
            memcpy(ws->hcur + i * O, st, O * sizeof(float));
            if (C)
                memcpy(ws->ccur + i * C, st + O, C * sizeof(float));
        } else {
            memset(ws->hcur + i * O, 0, O * sizeof(float));
            if (C)
                memset(ws->ccur + i * C, 0, C * sizeof(float));
        }
    }
    for (size_t t = 0; t < sp->maxlen; t++) {
        if (stopping(par))
            return RNND_ERR_STOPPED;
        size_t nb = plan_nb(sp, t);
        cell_io io = {
            .nb = nb,
            .cp = ws->ccur,
            .ldcp = C,
            .cn = ws->ccur,
            .ldcn = C,
        };
        if (clock) {
            for (size_t i = 0; i < nb; i++) /* wrapping where the step path does */
                ws->tc[i] = (ws->t0[i] + t) % RNND_CLOCK_WRAP;
            io.tc = ws->tc;
        }
        if (!reversed) {
            /* in place: this step's rows, the previous step's rows for h */
            io.gx = ws->gx_all + sp->start[t] * GH;
            io.ldgx = GH;
            io.hp = t ? Yd + sp->start[t - 1] * ldy : ws->hcur;
            io.ldhp = t ? ldy : O;
            io.hn = Yd + sp->start[t] * ldy;
            io.ldhn = ldy;
            if (low_c) {
                io.cl = low_c + sp->start[t] * H;
                io.ldcl = H;
            }
            run_cell(n, l, d, &io, ws->gh, ws->t1, ws->t2, par);
            if (keep_c)
                memcpy(keep_c + sp->start[t] * H, ws->ccur, nb * H * sizeof(float));
            continue;
        }
        /* reversed: sequence i is at position len - 1 - t, a different step for each
         * length, so its rows are gathered and its outputs scattered */
        for (size_t i = 0; i < nb; i++) {
            size_t pos = sp->lens[sp->order[i]] - 1 - t;
            memcpy(ws->gxb + i * GH, ws->gx_all + (sp->start[pos] + i) * GH, GH * sizeof(float));
        }
        io.gx = ws->gxb;
        io.ldgx = GH;
        io.hp = ws->hcur;
        io.ldhp = O;
        io.hn = ws->hnew;
        io.ldhn = O;
        run_cell(n, l, d, &io, ws->gh, ws->t1, ws->t2, par);
        memcpy(ws->hcur, ws->hnew, nb * O * sizeof(float));
        for (size_t i = 0; i < nb; i++) {
            size_t pos = sp->lens[sp->order[i]] - 1 - t;
            memcpy(Yd + (sp->start[pos] + i) * ldy, ws->hnew + i * O, O * sizeof(float));
        }
    }
    if (!final)
        return RNND_OK;
    for (size_t i = 0; i < sp->B; i++) {
        size_t b = sp->order[i];
        if (!final[b])
            continue;
        /* forward: the h of the last step is that step's output row */
        const float *h = reversed ? ws->hcur + i * O : Yd + (sp->start[sp->lens[b] - 1] + i) * ldy;
        memcpy(final[b] + soff, h, O * sizeof(float));
        if (C)
            memcpy(final[b] + soff + O, ws->ccur + i * C, C * sizeof(float));
        if (clock)
            rnnd_clock_put(final[b] + soff + O, ws->t0[i] + sp->lens[b]);
    }
    return RNND_OK;
}

int rnnd_net_forward(const rnnd_net *n, const rnnd_seq_batch *seqs, char *err, size_t errlen)
{
    return rnnd_net_forward_par(n, seqs, NULL, err, errlen);
}

int rnnd_net_forward_par(const rnnd_net *n, const rnnd_seq_batch *seqs, const rnnd_parallel *par,
                         char *err, size_t errlen)
{
    const rnnd_model_spec *s = n->spec;
    size_t B = seqs->B;
    const size_t *lens = seqs->lens;
    const int32_t *const *tokens = seqs->tokens;
    const float *const *vectors = seqs->vectors;
    const float *const *init = seqs->init;
    float *const *outputs = seqs->outputs;
    float *const *final = seqs->final;
    seq_plan sp = {.B = B, .lens = lens};
    int rc;

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
    if (sp.N > INT_MAX / 4) { /* cblas takes int sizes */
        snprintf(err, errlen, "too many steps in one call (%zu)", sp.N);
        return RNND_ERR_LIMIT;
    }
    seq_ws *ws = seq_ws_get(n);
    if (!ws || seq_ws_reserve(n, ws, B, sp.N, sp.maxlen) != 0) {
        seq_ws_free(ws);
        snprintf(err, errlen, "out of memory for %zu steps", sp.N);
        return RNND_ERR_NOMEM;
    }
    size_t *order = ws->order, *start = ws->start;
    for (size_t b = 0; b < B; b++)
        order[b] = b;
    qsort_r(order, B, sizeof *order, cmp_len_desc, &lens);
    /* start[t]: rows before step t; slot i runs at t while lens[order[i]] > t */
    size_t nb = B;
    start[0] = 0;
    for (size_t t = 0; t < sp.maxlen; t++) {
        while (nb > 0 && lens[order[nb - 1]] <= t)
            nb--;
        start[t + 1] = start[t] + nb;
    }
    sp.order = order;
    sp.start = start;

    float *X = ws->X, *Y = ws->Y;
    size_t D = (size_t)s->input_dim;
    for (size_t i = 0; i < B; i++) {
        size_t b = order[i];
        for (size_t t = 0; t < lens[b]; t++) {
            float *row = X + (start[t] + i) * D;
            if (s->input_kind == RNND_INPUT_TOKENS)
                embed(s, 1, tokens[b] + t, row);
            else
                memcpy(row, vectors[b] + t * D, D * sizeof(float));
        }
    }

    size_t ldx = D;
    for (int l = 0; l < s->n_layers; l++) {
        const rnnd_layer_spec *L = &s->layers[l];
        for (int d = 0; d < L->num_directions; d++) {
            if (run_direction(n, l, d, &sp, X, Y, init, final, ws, par)) {
                seq_ws_put(n, ws);
                snprintf(err, errlen, "stopped part way: the server is shutting down");
                return RNND_ERR_STOPPED;
            }
        }
        ldx = (size_t)L->out_dim * L->num_directions;
        float *t = X;
        X = Y;
        Y = t;
    }
    /* X now holds the last layer's output [N, ldx] */
    size_t K = ldx, rows = sp.N;
    if (s->pool != RNND_POOL_NONE) {
        pool_rows(s, &sp, X, ldx, Y); /* B rows, slot order, into the free buffer */
        float *t = X;
        X = Y;
        Y = t;
        rows = B;
    }
    if (s->has_head) {
        K = (size_t)s->head_out;
        X = run_head(n, X, Y, NULL, rows, par);
    }
    for (size_t i = 0; i < B; i++) {
        size_t b = order[i];
        if (s->pool != RNND_POOL_NONE) {
            memcpy(outputs[b], X + i * K, K * sizeof(float));
            continue;
        }
        for (size_t t = 0; t < lens[b]; t++)
            memcpy(outputs[b] + t * K, X + (start[t] + i) * K, K * sizeof(float));
    }
    seq_ws_put(n, ws);
    return RNND_OK;
}
