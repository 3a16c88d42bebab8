/* `rnnd bench`: random weights through the serving code path (loader, packing, kernels,
 * rnnd_net_step / rnnd_net_forward), one JSON line of results. */
#include "config.h"

#include <getopt.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_peak.h"
#include "cmd.h"
#include "rnnd/kernels.h"
#include "rnnd/model.h"
#include "rnnd/rnn.h"
#include "rnnd/status.h"

typedef struct bench_opts {
    const char *cell, *mode, *weights, *forget;
    int hidden, input, threads, heads;
    size_t batch, steps;
    int sgemm; /* --sgemm N: also OpenBLAS's one-thread sgemm peak; 0 not */
    double seconds;
    const char *periods; /* clockwork: --periods, or NULL for the default */
    int n_periods;
    long period[RNND_MAX_PERIODS];
    const char *compute; /* --compute f32|bf16 */
} bench_opts;

/* A clockwork layer's default modules: four, each half as fast as the one before. */
#define DEFAULT_PERIODS "1,2,4,8"

/* TEXT as strictly increasing positive periods into O; 0 when it is not, or when their
 * number does not divide --hidden (the loader would refuse the model). */
static int parse_periods(const char *text, bench_opts *o)
{
    const char *p = text;
    o->n_periods = 0;
    for (;;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > 2147483647 || o->n_periods == RNND_MAX_PERIODS ||
            (o->n_periods && v <= o->period[o->n_periods - 1]))
            return 0;
        o->period[o->n_periods++] = v;
        if (*end == '\0')
            break;
        if (*end != ',')
            return 0;
        p = end + 1;
    }
    return o->hidden > 0 && o->hidden % o->n_periods == 0;
}

static void bench_usage(FILE *f)
{
    fprintf(f,
            "usage: rnnd bench [OPTIONS]\n"
            "Runs a one-layer model with random weights through the serving code path and\n"
            "prints one JSON line: cell, mode, H, I, B, T, threads, weights, compute, isa,\n"
            "steps_per_s, us_per_step (per call), gflops (slstm: also heads, forget).\n\n"
            "  --cell NAME           lstm, gru, rnn, dglstm, mingru, minlstm, slstm or\n"
            "                        clockwork (default lstm); dglstm: two lstm layers of H,\n"
            "                        the second depth-gated\n"
            "  --heads K             slstm: heads of the block-diagonal R (default 4; K must\n"
            "                        divide H)\n"
            "  --forget exp|sigmoid  slstm: the forget gate (default exp)\n"
            "  --periods LIST        clockwork: the modules' periods (default 1,2,4,8)\n"
            "  --hidden H            hidden size (default 512)\n"
            "  --input I             input size (default: H)\n"
            "  --batch B             sessions per step / sequences per call (default 1)\n"
            "  --mode stream|seq     stream: B sessions advance one step per call, states\n"
            "                        carried; seq: B sequences of T steps per call\n"
            "  --steps T             sequence length for seq mode (default 100)\n"
            "  --threads N           threads that split each step (default 1, at most 64)\n"
            "  --seconds S           measuring time after a warm-up (default 2)\n"
            "  --weights f32|bf16|f16|int8  weight matrices' element type (default f32); half\n"
            "                        types are rounded from the random floats, compute stays\n"
            "                        float (docs/model-format.md, \"Half-size weights\");\n"
            "                        int8 quantizes them per row and the products are integer\n"
            "                        (docs/model-format.md, \"int8 weights\")\n"
            "  --compute f32|bf16    how bf16 weights' products are taken (default f32: each\n"
            "                        weight widened to float); bf16 (with --weights bf16\n"
            "                        only): inputs rounded to bf16 too, pairs summed as\n"
            "                        VDPBF16PS does (docs/kernels.md, \"bf16 compute\")\n"
            "  --sgemm N             also time OpenBLAS's sgemm of two N x N matrices on one\n"
            "                        thread (best call of --seconds): adds sgemm_n,\n"
            "                        sgemm_gflops, of_sgemm (gflops / sgemm_gflops) and\n"
            "                        blas_core; the peak one core reaches (N = 2048);\n"
            "                        and best_gflops, of_sgemm_best from the cell's fastest\n"
            "                        call, as the peak is sgemm's\n"
            "The kernel path is the best for this CPU unless RNND_ISA names one.\n");
}

/* A team of N threads (the caller and N - 1 helpers) for rnnd_parallel: helpers spin on a
 * generation counter, so a stage starts in well under a microsecond. Fine for a benchmark
 * that owns the machine; the daemon lends its pool instead (src/batcher.c). */
typedef struct team {
    size_t n;
    pthread_t *th;
    size_t started;
    atomic_uint gen;       /* bumped for each job */
    atomic_size_t pending; /* helpers still on the current job */
    atomic_int stop;
    void (*fn)(void *arg, size_t i);
    void *arg;
    size_t items;
} team;

typedef struct helper {
    team *t;
    size_t index;
} helper;

static void relax(unsigned *spins)
{
    if (++*spins < 4096) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    } else {
        *spins = 0;
        sched_yield(); /* the machine is shared: let whoever holds our core run */
    }
}

static void *helper_main(void *arg)
{
    helper *h = arg;
    team *t = h->t;
    unsigned seen = 0, spins = 0;
    for (;;) {
        unsigned g;
        while ((g = atomic_load(&t->gen)) == seen && !atomic_load(&t->stop))
            relax(&spins);
        if (atomic_load(&t->stop))
            break;
        seen = g;
        for (size_t i = h->index; i < t->items; i += t->n)
            t->fn(t->arg, i);
        atomic_fetch_sub(&t->pending, 1);
    }
    free(h);
    return NULL;
}

static void team_run(void *ctx, void (*fn)(void *arg, size_t i), void *arg, size_t n)
{
    team *t = ctx;
    t->fn = fn;
    t->arg = arg;
    t->items = n;
    atomic_store(&t->pending, t->n - 1);
    atomic_fetch_add(&t->gen, 1); /* publishes the job (seq_cst) */
    for (size_t i = 0; i < n; i += t->n)
        fn(arg, i);
    unsigned spins = 0;
    while (atomic_load(&t->pending) != 0)
        relax(&spins);
}

static void team_free(team *t)
{
    if (!t)
        return;
    atomic_store(&t->stop, 1);
    for (size_t i = 0; i < t->started; i++)
        pthread_join(t->th[i], NULL);
    free(t->th);
    free(t);
}

static team *team_new(size_t n)
{
    team *t = calloc(1, sizeof *t);
    if (!t || !(t->th = calloc(n, sizeof *t->th))) {
        free(t);
        return NULL;
    }
    t->n = n;
    for (size_t i = 1; i < n; i++) {
        helper *h = malloc(sizeof *h);
        if (h)
            *h = (helper){t, i};
        if (!h || pthread_create(&t->th[t->started], NULL, helper_main, h)) {
            free(h);
            team_free(t);
            return NULL;
        }
        t->started++;
    }
    return t;
}

static int parse_opts(int argc, char **argv, bench_opts *o)
{
    static const struct option longopts[] = {
        {"cell", required_argument, NULL, 'c'},    {"hidden", required_argument, NULL, 'H'},
        {"input", required_argument, NULL, 'I'},   {"batch", required_argument, NULL, 'B'},
        {"mode", required_argument, NULL, 'm'},    {"steps", required_argument, NULL, 'T'},
        {"threads", required_argument, NULL, 'n'}, {"seconds", required_argument, NULL, 's'},
        {"weights", required_argument, NULL, 'w'}, {"help", no_argument, NULL, 'h'},
        {"periods", required_argument, NULL, 'p'}, {"heads", required_argument, NULL, 'K'},
        {"forget", required_argument, NULL, 'f'},  {"sgemm", required_argument, NULL, 'g'},
        {"compute", required_argument, NULL, 'C'}, {NULL, 0, NULL, 0},
    };
    *o = (bench_opts){"lstm", "stream", "f32", NULL, 512,  0, 1,   0,
                      1,      100,      0,     2.0,  NULL, 0, {0}, "f32"};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'c': o->cell = optarg; break;
        case 'H': o->hidden = atoi(optarg); break;
        case 'I': o->input = atoi(optarg); break;
        case 'B': o->batch = (size_t)strtoul(optarg, NULL, 10); break;
        case 'm': o->mode = optarg; break;
        case 'T': o->steps = (size_t)strtoul(optarg, NULL, 10); break;
        case 'n': o->threads = atoi(optarg); break;
        case 's': o->seconds = atof(optarg); break;
        case 'w': o->weights = optarg; break;
        case 'p': o->periods = optarg; break;
        case 'K':
            o->heads = atoi(optarg);
            if (o->heads < 1)
                o->heads = -1;
            break;
        case 'f': o->forget = optarg; break;
        case 'g': o->sgemm = atoi(optarg); break;
        case 'C': o->compute = optarg; break;
        case 'h': bench_usage(stdout); return 1;
        default: bench_usage(stderr); return 2;
        }
    }
    if (!o->input)
        o->input = o->hidden;
    const char *bad = NULL;
    int slstm = !strcmp(o->cell, "slstm");
    if (slstm && !o->heads)
        o->heads = 4;
    if (slstm && !o->forget)
        o->forget = "exp";
    if (strcmp(o->cell, "lstm") && strcmp(o->cell, "gru") && strcmp(o->cell, "rnn") &&
        strcmp(o->cell, "mingru") && strcmp(o->cell, "minlstm") && !slstm &&
        strcmp(o->cell, "clockwork") && strcmp(o->cell, "dglstm"))
        bad = "--cell must be lstm, gru, rnn, dglstm, mingru, minlstm, slstm or clockwork";
    else if (!slstm && (o->heads || o->forget))
        bad = "--heads and --forget are for --cell slstm only";
    else if (slstm && (o->heads < 1 || o->hidden < 1 || o->hidden % o->heads))
        bad = "--heads must be a positive divisor of --hidden";
    else if (slstm && strcmp(o->forget, "exp") && strcmp(o->forget, "sigmoid"))
        bad = "--forget must be exp or sigmoid";
    else if (o->periods && strcmp(o->cell, "clockwork"))
        bad = "--periods is for --cell clockwork";
    else if (!o->periods && !strcmp(o->cell, "clockwork") && !parse_periods(DEFAULT_PERIODS, o))
        bad = "--cell clockwork with the default periods 1,2,4,8 needs --hidden divisible by 4";
    else if (o->periods && !parse_periods(o->periods, o))
        bad = "--periods must be up to 64 strictly increasing positive integers separated by "
              "commas, as many as divide --hidden evenly";
    else if (o->hidden < 1 || o->hidden > 16384 || o->input < 1 || o->input > 16384)
        bad = "--hidden and --input must be 1..16384";
    else if (o->batch < 1 || o->batch > 4096)
        bad = "--batch must be 1..4096";
    else if (strcmp(o->mode, "stream") && strcmp(o->mode, "seq"))
        bad = "--mode must be stream or seq";
    else if (o->steps < 1 || o->steps > 100000)
        bad = "--steps must be 1..100000";
    else if (o->threads < 1 || o->threads > 64)
        bad = "--threads must be 1..64";
    else if (strcmp(o->weights, "f32") && strcmp(o->weights, "bf16") && strcmp(o->weights, "f16") &&
             strcmp(o->weights, "int8"))
        bad = "--weights must be f32, bf16, f16 or int8";
    else if (strcmp(o->compute, "f32") && strcmp(o->compute, "bf16"))
        bad = "--compute must be f32 or bf16";
    else if (!strcmp(o->compute, "bf16") && strcmp(o->weights, "bf16"))
        bad = "--compute bf16 needs --weights bf16 (it takes the products of bf16 weights)";
    else if (o->sgemm < 0 || o->sgemm > 8192)
        bad = "--sgemm must be 1..8192 (0: not measured)";
    else if (!(o->seconds > 0 && o->seconds < 3600))
        bad = "--seconds must be in (0, 3600)";
    if (bad) {
        fprintf(stderr, "rnnd bench: %s\n", bad);
        return 2;
    }
    return 0;
}

int rnnd_cmd_bench(int argc, char **argv)
{
    bench_opts o;
    int rc = parse_opts(argc, argv, &o);
    if (rc)
        return rc == 1 ? 0 : rc;

    char arch[1664], err[512], extra[80] = "", periods[1024] = "", second[128] = "";
    int slstm = !strcmp(o.cell, "slstm"), clock = !strcmp(o.cell, "clockwork");
    /* a depth gate needs an lstm below it: dglstm is that pair */
    int dg = !strcmp(o.cell, "dglstm");
    if (dg)
        snprintf(second, sizeof second,
                 ",{\"type\":\"lstm\",\"hidden_size\":%d,"
                 "\"depth_gate\":true}",
                 o.hidden);
    if (slstm)
        snprintf(extra, sizeof extra, ",\"heads\":%d,\"forget\":\"%s\"", o.heads, o.forget);
    for (int k = 0, len = 0; clock && k < o.n_periods; k++)
        len += snprintf(periods + len, sizeof periods - (size_t)len, "%s%ld",
                        k ? "," : ",\"periods\":[", o.period[k]);
    if (clock)
        strcat(periods, "]");
    snprintf(arch, sizeof arch,
             "{\"format_version\":1,\"weights\":\"%s\","
             "\"input\":{\"kind\":\"vectors\",\"dim\":%d},"
             "\"layers\":[{\"type\":\"%s\",\"hidden_size\":%d,\"direction\":\"forward\""
             "%s%s}%s]}",
             o.weights, o.input, dg ? "lstm" : o.cell, o.hidden, extra, periods, second);
    const rnnd_kernels *k = rnnd_kernels_select(err, sizeof err);
    if (!k) {
        fprintf(stderr, "rnnd bench: %s\n", err);
        return 1;
    }
    rnnd_model *m = NULL;
    rnnd_net *net = NULL;
    /* small weights keep the activations out of saturation, like a trained model */
    float scale = 1.0f / (float)o.hidden;
    if (rnnd_model_random(arch, 1, scale, &m, err, sizeof err) ||
        (!strcmp(o.compute, "bf16") && rnnd_model_set_compute(m, RNND_COMPUTE_BF16) &&
         snprintf(err, sizeof err, "cannot set the bf16 compute mode") > 0) ||
        rnnd_net_new(m, k, &net, err, sizeof err)) {
        fprintf(stderr, "rnnd bench: %s\n", err);
        rnnd_model_unref(m);
        return 1;
    }
    rnnd_model_unref(m);

    int seq = !strcmp(o.mode, "seq");
    size_t B = o.batch, T = seq ? o.steps : 1, I = (size_t)o.input;
    size_t sn = rnnd_net_state_floats(net), on = (size_t)rnnd_net_output_dim(net);
    float *x = malloc(B * T * I * sizeof(float));
    float *states = calloc(B * sn, sizeof(float));
    float *out = malloc(B * T * on * sizeof(float));
    float **sp = malloc(B * sizeof *sp);
    size_t *lens = malloc(B * sizeof *lens);
    const float **xp = malloc(B * sizeof *xp);
    float **op = malloc(B * sizeof *op);
    rnnd_work *w = rnnd_work_new(net, B);
    team *tm = o.threads > 1 ? team_new((size_t)o.threads) : NULL;
    rnnd_parallel par = {team_run, tm, (size_t)o.threads, NULL};
    if (!x || !states || !out || !sp || !lens || !xp || !op || !w || (o.threads > 1 && !tm)) {
        fprintf(stderr, "rnnd bench: out of memory\n");
        rc = 1;
        goto done;
    }
    for (size_t i = 0; i < B * T * I; i++)
        x[i] = (float)((i * 2654435761u) % 2001) / 1000.0f - 1.0f;
    for (size_t b = 0; b < B; b++) {
        sp[b] = states + b * sn;
        lens[b] = T;
        xp[b] = x + b * T * I;
        op[b] = out + b * T * on;
    }
    rnnd_seq_batch seqs = {.B = B, .lens = lens, .vectors = xp, .outputs = op};

    double t0 = 0, elapsed = 0, best = 0; /* best: the fastest measured call */
    size_t calls = 0;
    for (int phase = 0; phase < 2; phase++) { /* 0: warm-up (a fifth of the time) */
        double limit = phase ? o.seconds : o.seconds / 5;
        calls = 0;
        t0 = rnnd_mono_s();
        do {
            double c0 = rnnd_mono_s();
            if (seq)
                rc = rnnd_net_forward_par(net, &seqs, tm ? &par : NULL, err, sizeof err);
            else
                rc = rnnd_net_step_par(net, w, B, NULL, x, sp, out, tm ? &par : NULL, err,
                                       sizeof err);
            if (rc) {
                fprintf(stderr, "rnnd bench: %s\n", err);
                rc = 1;
                goto done;
            }
            calls++;
            double c1 = rnnd_mono_s();
            if (phase && (best == 0 || c1 - c0 < best))
                best = c1 - c0;
            elapsed = c1 - t0;
        } while (elapsed < limit);
    }
    int G = !strcmp(o.cell, "lstm") || dg || slstm ? 4
        : !strcmp(o.cell, "gru")                   ? 3
        : !strcmp(o.cell, "mingru")                ? 2
        : !strcmp(o.cell, "minlstm")               ? 3
                                                   : 1;
    /* the min cells have no R: their products are W x alone */
    int recurrent = strncmp(o.cell, "min", 3) != 0;
    double steps = (double)calls * (double)B * (double)T;
    /* slstm: R h is K blocks of d = H / K columns, H * d per gate rather than H * H */
    double rcols = !recurrent ? 0 : slstm ? (double)(o.hidden / o.heads) : o.hidden;
    double flops = 2.0 * G * o.hidden * ((double)o.input + rcols) * steps;
    if (clock) {
        /* the products a step does on average: W x, and module k's blocks of R (its own and
         * those after it) every T_k-th step */
        double hm = (double)o.hidden / o.n_periods, r = 0;
        for (int j = 0; j < o.n_periods; j++)
            r += 2.0 * hm * ((double)o.hidden - j * hm) / (double)o.period[j];
        flops = (2.0 * o.hidden * (double)o.input + r) * steps;
    }
    if (dg) /* the second layer: W and R of 4 H rows over H, and D [H, H] */
        flops += 2.0 * (5.0 * o.hidden * o.hidden + 4.0 * o.hidden * o.hidden) * steps;
    double gflops = flops / elapsed * 1e-9;
    printf("{\"cell\":\"%s\",\"mode\":\"%s\",\"H\":%d,\"I\":%d,\"B\":%zu,\"T\":%zu,"
           "\"threads\":%d,\"weights\":\"%s\",\"compute\":\"%s\",\"isa\":\"%s\","
           "\"steps_per_s\":%.1f,\"us_per_step\":%.3f,\"gflops\":%.2f%s",
           o.cell, o.mode, o.hidden, o.input, B, T, o.threads, o.weights, o.compute, k->name,
           steps / elapsed, elapsed / (double)calls * 1e6, gflops, extra);
    if (o.sgemm) {
        double peak = rnnd_sgemm_peak(o.sgemm, o.seconds);
        if (peak <= 0) {
            fprintf(stderr, "rnnd bench: out of memory for --sgemm %d\n", o.sgemm);
            rc = 1;
            goto done;
        }
        /* the peak is sgemm's best call: the cell's best call is its like, steadier than the
         * mean on a shared machine */
        double best_gflops = best > 0 ? flops / (double)calls / best * 1e-9 : 0;
        printf(",\"sgemm_n\":%d,\"sgemm_gflops\":%.2f,\"of_sgemm\":%.3f,\"blas_core\":\"%s\","
               "\"best_gflops\":%.2f,\"of_sgemm_best\":%.3f",
               o.sgemm, peak, gflops / peak, rnnd_blas_core(), best_gflops, best_gflops / peak);
    }
    printf("}\n");
    rc = 0;
done:
    team_free(tm);
    rnnd_work_free(w);
    free(x);
    free(states);
    free(out);
    free(sp);
    free(lens);
    free(xp);
    free(op);
    rnnd_net_free(net);
    return rc;
}
