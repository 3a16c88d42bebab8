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
#include <time.h>

#include "cmd.h"
#include "rnnd/kernels.h"
#include "rnnd/model.h"
#include "rnnd/rnn.h"

typedef struct bench_opts {
    const char *cell, *mode, *weights;
    int hidden, input, threads;
    size_t batch, steps;
    double seconds;
} bench_opts;

static void bench_usage(FILE *f)
{
    fprintf(f,
            "usage: rnnd bench [OPTIONS]\n"
            "Runs a one-layer model with random weights through the serving code path and\n"
            "prints one JSON line: cell, mode, H, I, B, T, threads, weights, isa, steps_per_s,\n"
            "us_per_step (per call), gflops.\n\n"
            "  --cell NAME           lstm, gru, rnn, dglstm, mingru or minlstm (default lstm);\n"
            "                        dglstm: two lstm layers of H, the second depth-gated\n"
            "  --hidden H            hidden size (default 512)\n"
            "  --input I             input size (default: H)\n"
            "  --batch B             sessions per step / sequences per call (default 1)\n"
            "  --mode stream|seq     stream: B sessions advance one step per call, states\n"
            "                        carried; seq: B sequences of T steps per call\n"
            "  --steps T             sequence length for seq mode (default 100)\n"
            "  --threads N           threads that split each step (default 1, at most 64)\n"
            "  --seconds S           measuring time after a warm-up (default 2)\n"
            "  --weights f32|bf16|f16  weight matrices' element type (default f32); half\n"
            "                        types are rounded from the random floats, compute stays\n"
            "                        float (docs/model-format.md, \"Half-size weights\")\n"
            "The kernel path is the best for this CPU unless RNND_ISA names one.\n");
}

/* A team of N threads (the caller and N - 1 helpers) for rnnd_parallel: helpers spin on a
 * generation counter, so a stage starts in well under a microsecond. Fine for a benchmark
 * that owns the machine; the daemon lends its pool instead (src/batcher.c). */
typedef struct team {
    size_t n;
    pthread_t *th;
    size_t started;
    atomic_uint gen;            /* bumped for each job */
    atomic_size_t pending;      /* helpers still on the current job */
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
        sched_yield();  /* the machine is shared: let whoever holds our core run */
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
    atomic_fetch_add(&t->gen, 1);   /* publishes the job (seq_cst) */
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

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int parse_opts(int argc, char **argv, bench_opts *o)
{
    static const struct option longopts[] = {
        {"cell", required_argument, NULL, 'c'}, {"hidden", required_argument, NULL, 'H'},
        {"input", required_argument, NULL, 'I'}, {"batch", required_argument, NULL, 'B'},
        {"mode", required_argument, NULL, 'm'}, {"steps", required_argument, NULL, 'T'},
        {"threads", required_argument, NULL, 'n'}, {"seconds", required_argument, NULL, 's'},
        {"weights", required_argument, NULL, 'w'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    *o = (bench_opts){"lstm", "stream", "f32", 512, 0, 1, 1, 100, 2.0};
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
        case 'h': bench_usage(stdout); return 1;
        default: bench_usage(stderr); return 2;
        }
    }
    if (!o->input)
        o->input = o->hidden;
    const char *bad = NULL;
    if (strcmp(o->cell, "lstm") && strcmp(o->cell, "gru") && strcmp(o->cell, "rnn") &&
        strcmp(o->cell, "mingru") && strcmp(o->cell, "minlstm") && strcmp(o->cell, "dglstm"))
        bad = "--cell must be lstm, gru, rnn, dglstm, mingru or minlstm";
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
    else if (strcmp(o->weights, "f32") && strcmp(o->weights, "bf16") &&
             strcmp(o->weights, "f16"))
        bad = "--weights must be f32, bf16 or f16";
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

    char arch[512], err[512];
    /* a depth gate needs an lstm below it: dglstm is that pair */
    int dg = !strcmp(o.cell, "dglstm");
    char second[128] = "";
    if (dg)
        snprintf(second, sizeof second, ",{\"type\":\"lstm\",\"hidden_size\":%d,"
                 "\"depth_gate\":true}", o.hidden);
    snprintf(arch, sizeof arch,
             "{\"format_version\":1,\"weights\":\"%s\","
             "\"input\":{\"kind\":\"vectors\",\"dim\":%d},"
             "\"layers\":[{\"type\":\"%s\",\"hidden_size\":%d,"
             "\"direction\":\"forward\"}%s]}",
             o.weights, o.input, dg ? "lstm" : o.cell, o.hidden, second);
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

    double t0 = 0, elapsed = 0;
    size_t calls = 0;
    for (int phase = 0; phase < 2; phase++) {   /* 0: warm-up (a fifth of the time) */
        double limit = phase ? o.seconds : o.seconds / 5;
        calls = 0;
        t0 = now_s();
        do {
            if (seq)
                rc = rnnd_net_forward_par(net, B, lens, NULL, xp, NULL, op, NULL,
                                          tm ? &par : NULL, err, sizeof err);
            else
                rc = rnnd_net_step_par(net, w, B, NULL, x, sp, out, tm ? &par : NULL, err,
                                       sizeof err);
            if (rc) {
                fprintf(stderr, "rnnd bench: %s\n", err);
                rc = 1;
                goto done;
            }
            calls++;
            elapsed = now_s() - t0;
        } while (elapsed < limit);
    }
    int G = !strcmp(o.cell, "lstm") || dg ? 4 : !strcmp(o.cell, "gru") ? 3
          : !strcmp(o.cell, "mingru") ? 2 : !strcmp(o.cell, "minlstm") ? 3 : 1;
    /* the min cells have no R: their products are W x alone */
    int recurrent = strncmp(o.cell, "min", 3) != 0;
    double steps = (double)calls * (double)B * (double)T;
    double flops = 2.0 * G * o.hidden * (double)(o.input + (recurrent ? o.hidden : 0)) * steps;
    if (dg)     /* the second layer: W and R of 4 H rows over H, and D [H, H] */
        flops += 2.0 * (5.0 * o.hidden * o.hidden + 4.0 * o.hidden * o.hidden) * steps;
    printf("{\"cell\":\"%s\",\"mode\":\"%s\",\"H\":%d,\"I\":%d,\"B\":%zu,\"T\":%zu,"
           "\"threads\":%d,\"weights\":\"%s\",\"isa\":\"%s\",\"steps_per_s\":%.1f,"
           "\"us_per_step\":%.3f,\"gflops\":%.2f}\n",
           o.cell, o.mode, o.hidden, o.input, B, T, o.threads, o.weights, k->name,
           steps / elapsed, elapsed / (double)calls * 1e6, flops / elapsed * 1e-9);
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
