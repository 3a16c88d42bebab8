/* bench/onednn_rnn.c: the oneDNN side of bench/compare. One fp32 forward-inference RNN, LSTM
 * or GRU layer through Debian's libdnnl, timed the way `rnnd bench` times rnnd, printing the
 * same JSON line plus "impl":"onednn".
 *
 *   stream: B sessions advance one step per primitive execution (T = 1); the state is carried
 *           by swapping the src_iter/dst_iter buffers between calls.
 *   seq:    B sequences of T steps in one execution, starting from a zero state.
 *
 * Weights are created in the user layout (ldigo), seeded, and reordered once into the layout
 * the primitive asks for (format_tag_any), so oneDNN runs its best packed path.
 * --check compares a few calls against a plain C reference of the same cell instead of
 * timing, to prove the harness does the work it claims (state carried, gates in order).
 *
 * Build: make -C bench (needs libdnnl-dev). Not part of the main build or `make check`. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>

typedef struct opts {
    const char *cell, *mode, *weights;
    int hidden, input, threads, lbr, check;
    long batch, steps;
    double seconds;
} opts;

/* Everything one run needs; freed by bench_free(). */
typedef struct bench {
    dnnl_engine_t eng;
    dnnl_stream_t strm;
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t prim;
    dnnl_memory_t src, dst, wl, wi, bias;
    dnnl_memory_t h[2], c[2];             /* state ping-pong: [cur] is read, [1 - cur] written */
    float *wl_user, *wi_user, *bias_user; /* ldigo / ldgo copies, kept for --check */
    int G, Gb, cur;                       /* gates; bias rows (lbr GRU has one extra) */
    long T, B, I, H;
} bench;

#define CHECK(call) \
    do { \
        dnnl_status_t st_ = (call); \
        if (st_ != dnnl_success) { \
            fprintf(stderr, "onednn_rnn: %s failed: %s\n", #call, dnnl_status2str(st_)); \
            return -1; \
        } \
    } while (0)

static void usage(FILE *f)
{
    fprintf(f,
            "usage: onednn_rnn [OPTIONS]\n"
            "oneDNN fp32 forward inference of one RNN layer; prints the JSON line of\n"
            "`rnnd bench` plus \"impl\":\"onednn\".\n\n"
            "  --cell lstm|gru|rnn   cell type (default lstm)\n"
            "  --hidden H            hidden size (default 512)\n"
            "  --input I             input size (default: H)\n"
            "  --batch B             sessions per step / sequences per call (default 1)\n"
            "  --mode stream|seq     stream: one step per execution, state carried;\n"
            "                        seq: B sequences of T steps per execution\n"
            "  --steps T             sequence length for seq mode (default 100)\n"
            "  --threads N           OpenMP threads for oneDNN (default 1)\n"
            "  --seconds S           measuring time after a warm-up of S/5 (default 2)\n"
            "  --weights f32         weight type (only f32)\n"
            "  --lbr 0|1             GRU: 1 = linear_before_reset (PyTorch's GRU), 0 = the\n"
            "                        ONNX default that `rnnd bench` runs (default 0)\n"
            "  --check               compare 3 calls against a C reference instead of timing\n");
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int parse_opts(int argc, char **argv, opts *o)
{
    static const struct option longopts[] = {
        {"cell", required_argument, NULL, 'c'},
        {"hidden", required_argument, NULL, 'H'},
        {"input", required_argument, NULL, 'I'},
        {"batch", required_argument, NULL, 'B'},
        {"mode", required_argument, NULL, 'm'},
        {"steps", required_argument, NULL, 'T'},
        {"threads", required_argument, NULL, 'n'},
        {"seconds", required_argument, NULL, 's'},
        {"weights", required_argument, NULL, 'w'},
        {"lbr", required_argument, NULL, 'l'},
        {"check", no_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    *o = (opts){"lstm", "stream", "f32", 512, 0, 1, 0, 0, 1, 100, 2.0};
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'c': o->cell = optarg; break;
        case 'H': o->hidden = atoi(optarg); break;
        case 'I': o->input = atoi(optarg); break;
        case 'B': o->batch = strtol(optarg, NULL, 10); break;
        case 'm': o->mode = optarg; break;
        case 'T': o->steps = strtol(optarg, NULL, 10); break;
        case 'n': o->threads = atoi(optarg); break;
        case 's': o->seconds = atof(optarg); break;
        case 'w': o->weights = optarg; break;
        case 'l': o->lbr = atoi(optarg); break;
        case 'k': o->check = 1; break;
        case 'h': usage(stdout); return 1;
        default: usage(stderr); return 2;
        }
    }
    if (!o->input)
        o->input = o->hidden;
    const char *bad = NULL;
    if (strcmp(o->cell, "lstm") && strcmp(o->cell, "gru") && strcmp(o->cell, "rnn"))
        bad = "--cell must be lstm, gru or rnn";
    else if (o->hidden < 1 || o->hidden > 16384 || o->input < 1 || o->input > 16384)
        bad = "--hidden and --input must be 1..16384";
    else if (o->batch < 1 || o->batch > 4096)
        bad = "--batch must be 1..4096";
    else if (strcmp(o->mode, "stream") && strcmp(o->mode, "seq"))
        bad = "--mode must be stream or seq";
    else if (o->steps < 1 || o->steps > 100000)
        bad = "--steps must be 1..100000";
    else if (o->threads < 1 || o->threads > 1024)
        bad = "--threads must be 1..1024";
    else if (strcmp(o->weights, "f32"))
        bad = "--weights: only f32";
    else if (o->lbr != 0 && o->lbr != 1)
        bad = "--lbr must be 0 or 1";
    else if (!(o->seconds > 0 && o->seconds < 3600))
        bad = "--seconds must be in (0, 3600)";
    if (bad) {
        fprintf(stderr, "onednn_rnn: %s\n", bad);
        return 2;
    }
    return 0;
}

/* xorshift64*: the same weights on every run (the values only need to be non-saturating) */
static float rand_uniform(uint64_t *s, float scale)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    uint64_t r = *s * 2685821657736338717ull;
    return ((float)(r >> 40) / (float)(1u << 24) * 2.0f - 1.0f) * scale;
}

static int mem_new(bench *b, const dnnl_memory_desc_t *md, dnnl_memory_t *m)
{
    CHECK(dnnl_memory_create(m, md, b->eng, DNNL_MEMORY_ALLOCATE));
    return 0;
}

static float *mem_ptr(dnnl_memory_t m)
{
    void *p = NULL;
    dnnl_memory_get_data_handle(m, &p);
    return p;
}

static void mem_fill_zero(dnnl_memory_t m)
{
    const dnnl_memory_desc_t *md = NULL;
    dnnl_memory_get_memory_desc(m, &md);
    memset(mem_ptr(m), 0, dnnl_memory_desc_get_size(md));
}

/* Reorders a user ldigo buffer into the primitive's weight layout for argument `arg`. */
static int weights_new(bench *b, int arg, const dnnl_memory_desc_t *user_md, float *user,
                       dnnl_memory_t *out)
{
    const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(b->pd, dnnl_query_exec_arg_md, arg);
    dnnl_memory_t um;
    dnnl_primitive_desc_t rpd;
    dnnl_primitive_t r;
    if (mem_new(b, md, out))
        return -1;
    CHECK(dnnl_memory_create(&um, user_md, b->eng, user));
    CHECK(dnnl_reorder_primitive_desc_create(&rpd, user_md, b->eng, md, b->eng, NULL));
    CHECK(dnnl_primitive_create(&r, rpd));
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, um}, {DNNL_ARG_TO, *out}};
    CHECK(dnnl_primitive_execute(r, b->strm, 2, args));
    CHECK(dnnl_stream_wait(b->strm));
    dnnl_primitive_destroy(r);
    dnnl_primitive_desc_destroy(rpd);
    dnnl_memory_destroy(um);
    return 0;
}

static int bench_init(bench *b, const opts *o)
{
    int lstm = !strcmp(o->cell, "lstm"), gru = !strcmp(o->cell, "gru");
    b->G = lstm ? 4 : gru ? 3 : 1;
    b->Gb = b->G + (gru && o->lbr);
    b->T = !strcmp(o->mode, "seq") ? o->steps : 1;
    b->B = o->batch;
    b->I = o->input;
    b->H = o->hidden;

    CHECK(dnnl_engine_create(&b->eng, dnnl_cpu, 0));
    CHECK(dnnl_stream_create(&b->strm, b->eng, dnnl_stream_default_flags));

    dnnl_dims_t d_src = {b->T, b->B, b->I}, d_dst = {b->T, b->B, b->H};
    dnnl_dims_t d_iter = {1, 1, b->B, b->H};
    dnnl_dims_t d_wl = {1, 1, b->I, b->G, b->H}, d_wi = {1, 1, b->H, b->G, b->H};
    dnnl_dims_t d_bias = {1, 1, b->Gb, b->H};
    dnnl_memory_desc_t src_md, dst_md, iter_md, wl_any, wi_any, wl_user, wi_user, bias_md;
    CHECK(dnnl_memory_desc_init_by_tag(&src_md, 3, d_src, dnnl_f32, dnnl_tnc));
    CHECK(dnnl_memory_desc_init_by_tag(&dst_md, 3, d_dst, dnnl_f32, dnnl_tnc));
    CHECK(dnnl_memory_desc_init_by_tag(&iter_md, 4, d_iter, dnnl_f32, dnnl_ldnc));
    CHECK(dnnl_memory_desc_init_by_tag(&wl_any, 5, d_wl, dnnl_f32, dnnl_format_tag_any));
    CHECK(dnnl_memory_desc_init_by_tag(&wi_any, 5, d_wi, dnnl_f32, dnnl_format_tag_any));
    CHECK(dnnl_memory_desc_init_by_tag(&wl_user, 5, d_wl, dnnl_f32, dnnl_ldigo));
    CHECK(dnnl_memory_desc_init_by_tag(&wi_user, 5, d_wi, dnnl_f32, dnnl_ldigo));
    CHECK(dnnl_memory_desc_init_by_tag(&bias_md, 4, d_bias, dnnl_f32, dnnl_ldgo));

    dnnl_rnn_desc_t rd;
    dnnl_prop_kind_t pk = dnnl_forward_inference;
    dnnl_rnn_direction_t dir = dnnl_unidirectional_left2right;
    if (lstm)
        CHECK(dnnl_lstm_forward_desc_init(&rd, pk, dir, &src_md, &iter_md, &iter_md, &wl_any,
                                          &wi_any, &bias_md, &dst_md, &iter_md, &iter_md, 0));
    else if (gru && o->lbr)
        CHECK(dnnl_lbr_gru_forward_desc_init(&rd, pk, dir, &src_md, &iter_md, &wl_any, &wi_any,
                                             &bias_md, &dst_md, &iter_md, 0));
    else if (gru)
        CHECK(dnnl_gru_forward_desc_init(&rd, pk, dir, &src_md, &iter_md, &wl_any, &wi_any,
                                         &bias_md, &dst_md, &iter_md, 0));
    else
        CHECK(dnnl_vanilla_rnn_forward_desc_init(&rd, pk, dnnl_eltwise_tanh, dir, &src_md, &iter_md,
                                                 &wl_any, &wi_any, &bias_md, &dst_md, &iter_md, 0,
                                                 0.0f, 0.0f));
    CHECK(dnnl_primitive_desc_create(&b->pd, &rd, NULL, b->eng, NULL));
    CHECK(dnnl_primitive_create(&b->prim, b->pd));

    /* PyTorch's default init range, 1/sqrt(H): trained-model-like, far from saturation */
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    float scale = 1.0f / sqrtf((float)b->H);
    size_t nwl = (size_t)b->I * b->G * b->H, nwi = (size_t)b->H * b->G * b->H;
    size_t nb = (size_t)b->Gb * b->H;
    b->wl_user = malloc(nwl * sizeof(float));
    b->wi_user = malloc(nwi * sizeof(float));
    b->bias_user = malloc(nb * sizeof(float));
    if (!b->wl_user || !b->wi_user || !b->bias_user) {
        fprintf(stderr, "onednn_rnn: out of memory\n");
        return -1;
    }
    for (size_t i = 0; i < nwl; i++)
        b->wl_user[i] = rand_uniform(&seed, scale);
    for (size_t i = 0; i < nwi; i++)
        b->wi_user[i] = rand_uniform(&seed, scale);
    for (size_t i = 0; i < nb; i++)
        b->bias_user[i] = rand_uniform(&seed, scale);
    if (weights_new(b, DNNL_ARG_WEIGHTS_LAYER, &wl_user, b->wl_user, &b->wl) ||
        weights_new(b, DNNL_ARG_WEIGHTS_ITER, &wi_user, b->wi_user, &b->wi) ||
        mem_new(b, &bias_md, &b->bias) || mem_new(b, &src_md, &b->src) ||
        mem_new(b, &dst_md, &b->dst))
        return -1;
    memcpy(mem_ptr(b->bias), b->bias_user, nb * sizeof(float));
    for (int k = 0; k < 2; k++) {
        if (mem_new(b, &iter_md, &b->h[k]) || (lstm && mem_new(b, &iter_md, &b->c[k])))
            return -1;
        mem_fill_zero(b->h[k]);
        if (lstm)
            mem_fill_zero(b->c[k]);
    }
    /* the same input values as `rnnd bench` */
    float *x = mem_ptr(b->src);
    for (size_t i = 0; i < (size_t)(b->T * b->B * b->I); i++)
        x[i] = (float)((i * 2654435761u) % 2001) / 1000.0f - 1.0f;
    return 0;
}

/* One execution. Stream mode reads state [cur], writes [1 - cur], then flips; seq mode
 * always starts from the zero state in [0] and leaves the final state in [1]. */
static int bench_call(bench *b, int carry)
{
    int in = carry ? b->cur : 0, out = 1 - in;
    dnnl_exec_arg_t args[9] = {
        {DNNL_ARG_SRC_LAYER, b->src},    {DNNL_ARG_SRC_ITER, b->h[in]},
        {DNNL_ARG_WEIGHTS_LAYER, b->wl}, {DNNL_ARG_WEIGHTS_ITER, b->wi},
        {DNNL_ARG_BIAS, b->bias},        {DNNL_ARG_DST_LAYER, b->dst},
        {DNNL_ARG_DST_ITER, b->h[out]},
    };
    int n = 7;
    if (b->c[0]) {
        args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SRC_ITER_C, b->c[in]};
        args[n++] = (dnnl_exec_arg_t){DNNL_ARG_DST_ITER_C, b->c[out]};
    }
    CHECK(dnnl_primitive_execute(b->prim, b->strm, n, args));
    CHECK(dnnl_stream_wait(b->strm));
    if (carry)
        b->cur = out;
    return 0;
}

static void bench_free(bench *b)
{
    dnnl_memory_t *mems[] = {&b->src,  &b->dst,  &b->wl,   &b->wi,  &b->bias,
                             &b->h[0], &b->h[1], &b->c[0], &b->c[1]};
    for (size_t i = 0; i < sizeof mems / sizeof *mems; i++)
        if (*mems[i])
            (void)dnnl_memory_destroy(*mems[i]); /* (void): a call, not a declaration */
    if (b->prim)
        dnnl_primitive_destroy(b->prim);
    if (b->pd)
        dnnl_primitive_desc_destroy(b->pd);
    if (b->strm)
        dnnl_stream_destroy(b->strm);
    if (b->eng)
        dnnl_engine_destroy(b->eng);
    free(b->wl_user);
    free(b->wi_user);
    free(b->bias_user);
}

static float sigm(float v) { return 1.0f / (1.0f + expf(-v)); }

/* One reference step of the cell for one batch row, oneDNN's gate order and formulas:
 * lstm i f c~ o; gru u r o with h' = u h + (1 - u) o; rnn tanh. */
static void ref_step(const bench *b, int lbr, const float *x, float *h, float *c, float *g,
                     float *gh)
{
    long I = b->I, H = b->H, G = b->G;
    for (long k = 0; k < G * H; k++) {
        double s = b->bias_user[k];
        for (long i = 0; i < I; i++)
            s += (double)x[i] * b->wl_user[i * G * H + k];
        g[k] = (float)s;
        double r = 0;
        for (long j = 0; j < H; j++)
            r += (double)h[j] * b->wi_user[j * G * H + k];
        gh[k] = (float)r;
    }
    if (G == 4) {
        for (long j = 0; j < H; j++) {
            float i_ = sigm(g[j] + gh[j]), f = sigm(g[H + j] + gh[H + j]);
            float cc = tanhf(g[2 * H + j] + gh[2 * H + j]), o = sigm(g[3 * H + j] + gh[3 * H + j]);
            c[j] = f * c[j] + i_ * cc;
            h[j] = o * tanhf(c[j]);
        }
    } else if (G == 1) {
        for (long j = 0; j < H; j++)
            h[j] = tanhf(g[j] + gh[j]);
    } else {
        float *rh = gh + 3 * H; /* scratch: r * h for the ONNX-default candidate */
        for (long j = 0; j < H; j++)
            rh[j] = sigm(g[H + j] + gh[H + j]) * h[j];
        for (long j = 0; j < H; j++) {
            float u = sigm(g[j] + gh[j]), r = sigm(g[H + j] + gh[H + j]), o;
            if (lbr) {
                o = tanhf(g[2 * H + j] + r * (gh[2 * H + j] + b->bias_user[3 * H + j]));
            } else {
                double s = 0;
                for (long i = 0; i < H; i++)
                    s += (double)rh[i] * b->wi_user[i * G * H + 2 * H + j];
                o = tanhf(g[2 * H + j] + (float)s);
            }
            c[j] = u * h[j] + (1.0f - u) * o; /* c is scratch for GRU: h must stay intact */
        }
        memcpy(h, c, (size_t)H * sizeof(float));
    }
}

/* Three calls of the primitive (stream: state carried) against the reference. */
static int run_check(bench *b, const opts *o)
{
    int carry = !strcmp(o->mode, "stream");
    long H = b->H, calls = 3;
    float *h = calloc((size_t)(b->B * H), sizeof(float));
    float *c = calloc((size_t)(b->B * H), sizeof(float));
    float *g = malloc((size_t)(4 * H) * sizeof(float));
    float *gh = malloc((size_t)(4 * H) * sizeof(float));
    float *cs = malloc((size_t)H * sizeof(float));
    double maxerr = 0;
    if (!h || !c || !g || !gh || !cs) {
        fprintf(stderr, "onednn_rnn: out of memory\n");
        return 1;
    }
    const float *x = mem_ptr(b->src);
    for (long call = 0; call < calls; call++) {
        if (bench_call(b, carry))
            return 1;
        if (!carry) {
            memset(h, 0, (size_t)(b->B * H) * sizeof(float));
            memset(c, 0, (size_t)(b->B * H) * sizeof(float));
        }
        const float *y = mem_ptr(b->dst);
        for (long t = 0; t < b->T; t++)
            for (long n = 0; n < b->B; n++) {
                float *hn = h + n * H, *cn = b->G == 4 ? c + n * H : cs;
                ref_step(b, o->lbr, x + (t * b->B + n) * b->I, hn, cn, g, gh);
                for (long j = 0; j < H; j++) {
                    double e = fabs((double)y[(t * b->B + n) * H + j] - hn[j]);
                    maxerr = e > maxerr ? e : maxerr;
                }
            }
    }
    int ok = maxerr < 1e-4;
    printf("{\"impl\":\"onednn\",\"check\":\"%s\",\"cell\":\"%s\",\"mode\":\"%s\",\"H\":%ld,"
           "\"I\":%ld,\"B\":%ld,\"T\":%ld,\"calls\":%ld,\"max_abs_err\":%.3g}\n",
           ok ? "ok" : "FAILED", o->cell, o->mode, H, b->I, b->B, b->T, calls, maxerr);
    free(h);
    free(c);
    free(g);
    free(gh);
    free(cs);
    return ok ? 0 : 1;
}

static const char *isa_name(dnnl_cpu_isa_t isa)
{
    switch (isa) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    default: return "other";
    }
}

int main(int argc, char **argv)
{
    opts o;
    int rc = parse_opts(argc, argv, &o);
    if (rc)
        return rc == 1 ? 0 : rc;
    /* oneDNN runs on OpenMP here: the thread count is the OpenMP one */
    omp_set_num_threads(o.threads);

    bench b = {0};
    if (bench_init(&b, &o)) {
        bench_free(&b);
        return 1;
    }
    if (o.check) {
        rc = run_check(&b, &o);
        bench_free(&b);
        return rc;
    }
    int carry = !strcmp(o.mode, "stream");
    double elapsed = 0;
    long calls = 0;
    for (int phase = 0; phase < 2; phase++) { /* 0: warm-up (a fifth of the time) */
        double limit = phase ? o.seconds : o.seconds / 5;
        calls = 0;
        double t0 = now_s();
        do {
            if (bench_call(&b, carry)) {
                bench_free(&b);
                return 1;
            }
            calls++;
            elapsed = now_s() - t0;
        } while (elapsed < limit);
    }
    const char *impl = "?";
    dnnl_primitive_desc_query(b.pd, dnnl_query_impl_info_str, 0, &impl);
    double steps = (double)calls * (double)b.B * (double)b.T;
    double flops = 2.0 * b.G * (double)b.H * (double)(b.I + b.H) * steps;
    printf("{\"impl\":\"onednn\",\"cell\":\"%s\",\"mode\":\"%s\",\"H\":%ld,\"I\":%ld,\"B\":%ld,"
           "\"T\":%ld,\"threads\":%d,\"weights\":\"%s\",\"isa\":\"%s\",\"steps_per_s\":%.1f,"
           "\"us_per_step\":%.3f,\"gflops\":%.2f,\"lbr\":%d,\"onednn_impl\":\"%s\"}\n",
           o.cell, o.mode, b.H, b.I, b.B, b.T, o.threads, o.weights,
           isa_name(dnnl_get_effective_cpu_isa()), steps / elapsed, elapsed / (double)calls * 1e6,
           flops / elapsed * 1e-9, o.lbr, impl);
    bench_free(&b);
    return 0;
}
