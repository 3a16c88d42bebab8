/* `rnnd bench --sgemm N`: one core's sgemm peak, the scale for the cells' GFLOP/s. */
#include "config.h"

#include <cblas.h>
#include <stdlib.h>

#include "bench_peak.h"
#include "rnnd/status.h"

/* The first call warms caches and OpenBLAS's buffers: not counted. */
double rnnd_sgemm_peak(int N, double seconds)
{
    size_t n = (size_t)N * (size_t)N;
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b), *c = malloc(n * sizeof *c);
    double best = -1;
    if (a && b && c) {
#ifdef HAVE_OPENBLAS_SET_NUM_THREADS
        openblas_set_num_threads(1);
#endif
        for (size_t i = 0; i < n; i++) {
            a[i] = (float)((i * 2654435761u) % 2001) / 1000.0f - 1.0f;
            b[i] = (float)((i * 40503u) % 2001) / 1000.0f - 1.0f;
        }
        double flops = 2.0 * (double)N * (double)N * (double)N, t0 = rnnd_mono_s();
        for (int i = 0; i < 4 || rnnd_mono_s() - t0 < seconds; i++) {
            double t = rnnd_mono_s();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1.0f, a, N, b, N, 0.0f,
                        c, N);
            double g = flops / (rnnd_mono_s() - t) * 1e-9;
            if (i > 0 && g > best)
                best = g;
        }
    }
    free(a);
    free(b);
    free(c);
    return best;
}

const char *rnnd_blas_core(void)
{
#ifdef HAVE_OPENBLAS_SET_NUM_THREADS
    const char *c = openblas_get_corename();
    return c ? c : "unknown";
#else
    return "unknown";
#endif
}
