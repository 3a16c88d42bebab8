/* The JSON cost of one step request on a 512-float body, before and after the direct decoder
 * (rnnd/step_scan.h) and the printf-free float text (rnnd/fmtfloat.h). Not run by make check:
 *
 *   make tests/bench_step_json && tests/bench_step_json [WIDTH] [REPS] [DECIMALS]
 *
 * "jansson": rnnd_infer_load + rnnd_json_floats, as the daemon decoded every body; "scan":
 * rnnd_step_scan_parse. "%.9g": WIDTH outputs with snprintf as rnnd_buf_float wrote them;
 * "fmt": rnnd_buf_floats now. Prints the median of 7 runs of REPS requests, in us/request. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rnnd/buf.h"
#include "rnnd/infer.h"
#include "rnnd/state_json.h"
#include "rnnd/status.h"
#include "rnnd/step_scan.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static volatile float sink;

static void decode_jansson(const char *body, size_t len, float *dst, size_t width)
{
    json_t *v;
    char err[256];
    if (rnnd_infer_load(body, len, &v, err, sizeof err) ||
        rnnd_json_floats(json_array_get(json_object_get(v, "inputs"), 0), dst, width, "x", err,
                         sizeof err)) {
        fprintf(stderr, "jansson: %s\n", err);
        exit(1);
    }
    sink = dst[width - 1];
    json_decref(v);
}

static void decode_scan(const char *body, size_t len, float *dst, size_t width)
{
    rnnd_step_scan sc;
    if (rnnd_step_scan_parse(body, len, 32, 4096, &sc) || sc.width != width) {
        fprintf(stderr, "scan declined\n");
        exit(1);
    }
    memcpy(dst, sc.vectors, width * sizeof *dst);
    sink = dst[width - 1];
    rnnd_step_scan_clear(&sc);
}

static void format_printf(const float *v, size_t n)
{
    rnnd_buf b;
    rnnd_buf_init(&b);
    rnnd_buf_append(&b, "[", 1);
    for (size_t i = 0; i < n; i++) {
        char tmp[32];
        int k = snprintf(tmp, sizeof tmp, "%.9g", (double)v[i]);
        if (i)
            rnnd_buf_append(&b, ",", 1);
        rnnd_buf_append(&b, tmp, (size_t)k);
    }
    rnnd_buf_append(&b, "]", 1);
    sink = (float)b.len;
    rnnd_buf_free(&b);
}

static void format_fmt(const float *v, size_t n)
{
    rnnd_buf b;
    rnnd_buf_init(&b);
    rnnd_buf_floats(&b, v, n);
    sink = (float)b.len;
    rnnd_buf_free(&b);
}

int main(int argc, char **argv)
{
    size_t width = argc > 1 ? (size_t)atol(argv[1]) : 512;
    int reps = argc > 2 ? atoi(argv[2]) : 2000;
    if (width < 1 || reps < 1)
        return 2;
    /* uniform floats in [-1, 1) written with 9 significant digits, or with DECIMALS decimals
     * (bench/e2e_step.lua writes 4) */
    int decimals = argc > 3 ? atoi(argv[3]) : -1;
    rnnd_buf body;
    rnnd_buf_init(&body);
    rnnd_buf_puts(&body, "{\"inputs\": [[");
    float *v = malloc(width * sizeof *v), *dst = malloc(width * sizeof *dst);
    unsigned s = 12345;
    for (size_t i = 0; i < width; i++) {
        s = s * 1103515245u + 12345u;
        v[i] = (float)(s >> 8) / 16777216.0f * 2.0f - 1.0f;
        if (decimals >= 0)
            rnnd_buf_printf(&body, "%s%.*f", i ? ", " : "", decimals, (double)v[i]);
        else
            rnnd_buf_printf(&body, "%s%.9g", i ? ", " : "", (double)v[i]);
    }
    rnnd_buf_puts(&body, "]]}");
    printf("body: %zu bytes, %zu floats; %d requests per run, median of 7 runs\n", body.len, width,
           reps);
    const char *names[] = {"decode jansson", "decode scan", "format %.9g", "format fmt"};
    for (int k = 0; k < 4; k++) {
        double t[7];
        for (int r = 0; r < 7; r++) {
            double t0 = rnnd_mono_s();
            for (int i = 0; i < reps; i++) {
                switch (k) {
                case 0: decode_jansson(body.data, body.len, dst, width); break;
                case 1: decode_scan(body.data, body.len, dst, width); break;
                case 2: format_printf(v, width); break;
                default: format_fmt(v, width); break;
                }
            }
            t[r] = (rnnd_mono_s() - t0) / reps * 1e6;
        }
        qsort(t, 7, sizeof t[0], cmp_double);
        printf("%-16s %8.1f us/request (min %.1f, max %.1f)\n", names[k], t[3], t[0], t[6]);
    }
    rnnd_buf_free(&body);
    free(v);
    free(dst);
    return 0;
}
