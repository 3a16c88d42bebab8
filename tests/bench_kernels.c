/* A small benchmark of the kernels (not part of `make check`): `make tests/bench_kernels`,
 * then tests/bench_kernels [ROWS COLS [B...]]. Prints, per path and batch size, the time of
 * one gemv, the weight bandwidth it reached and GFLOP/s, next to OpenBLAS sgemv/sgemm on the
 * same shape (different summation order, so only a speed reference). */
#include "config.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rnnd/kernels.h"
#include "rnnd/status.h"

static float *rand_buf(size_t n)
{
    float *p = malloc(n * sizeof(float));
    if (p == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++)
        p[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    return p;
}

/* Repeat F until about 0.3 s have passed; the best time of one call. */
#define BEST_TIME(OUT, F) \
    do { \
        double best_ = 1e30, start_ = rnnd_mono_s(); \
        do { \
            double t0_ = rnnd_mono_s(); \
            F; \
            double t_ = rnnd_mono_s() - t0_; \
            if (t_ < best_) \
                best_ = t_; \
        } while (rnnd_mono_s() - start_ < 0.3); \
        (OUT) = best_; \
    } while (0)

int main(int argc, char **argv)
{
    int rows = argc > 2 ? atoi(argv[1]) : 2048;
    int cols = argc > 2 ? atoi(argv[2]) : 1024;
    size_t Bs[16] = {1, 2, 4, 8, 16, 64, 256};
    int nB = 7;
    if (argc > 3) {
        nB = 0;
        for (int i = 3; i < argc && nB < 16; i++)
            Bs[nB++] = (size_t)atol(argv[i]);
    }
    size_t maxB = 1;
    for (int i = 0; i < nB; i++)
        if (Bs[i] > maxB)
            maxB = Bs[i];

    float *W = rand_buf((size_t)rows * cols);
    float *bias = rand_buf((size_t)rows);
    float *X = rand_buf(maxB * (size_t)cols);
    float *Y = rand_buf(maxB * (size_t)rows);
#ifdef HAVE_OPENBLAS_SET_NUM_THREADS
    openblas_set_num_threads(1); /* the kernels run on one thread: compare like with like */
#endif
    rnnd_packed P;
    if (rnnd_pack(W, rows, cols, &P) != 0) {
        fprintf(stderr, "pack failed\n");
        return 1;
    }
    double mib = (double)rows * cols * 4 / (1 << 20);
    printf("W %d x %d (%.1f MiB)\n", rows, cols, mib);
    printf("%-8s %6s %12s %10s %10s\n", "path", "B", "us/call", "GB/s(W)", "GFLOP/s");
    for (const char *const *a = rnnd_kernels_available(); *a != NULL; a++) {
        const rnnd_kernels *k = rnnd_kernels_by_name(*a);
        for (int i = 0; i < nB; i++) {
            size_t B = Bs[i];
            if (k == rnnd_kernels_by_name("scalar") && B > 8)
                continue;
            double t;
            BEST_TIME(t, k->gemv(&P, bias, X, (size_t)cols, B, Y, (size_t)rows, 0, rows));
            printf("%-8s %6zu %12.2f %10.2f %10.2f\n", k->name, B, t * 1e6,
                   (double)rows * cols * 4 / t * 1e-9, 2.0 * rows * cols * B / t * 1e-9);
        }
    }
    for (int i = 0; i < nB; i++) {
        size_t B = Bs[i];
        double t;
        if (B == 1)
            BEST_TIME(t,
                      cblas_sgemv(CblasRowMajor, CblasNoTrans, rows, cols, 1.0f, W, cols, X, 1,
                                  0.0f, Y, 1));
        else
            BEST_TIME(t,
                      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)B, rows, cols, 1.0f,
                                  X, cols, W, cols, 0.0f, Y, rows));
        printf("%-8s %6zu %12.2f %10.2f %10.2f\n", "openblas", B, t * 1e6,
               (double)rows * cols * 4 / t * 1e-9, 2.0 * rows * cols * B / t * 1e-9);
    }

    /* activations: ns per element on a hidden-size vector */
    float *v = rand_buf(4096);
    static const char *names[] = {"sigmoid", "tanh", "softplus"};
    static const int kinds[] = {RNND_ACT_SIGMOID, RNND_ACT_TANH, RNND_ACT_SOFTPLUS};
    for (const char *const *a = rnnd_kernels_available(); *a != NULL; a++) {
        const rnnd_kernels *k = rnnd_kernels_by_name(*a);
        for (int j = 0; j < 3; j++) {
            rnnd_activation act = {kinds[j], 0, 0};
            double t;
            BEST_TIME(t, k->act(&act, v, 4096));
            for (int q = 0; q < 4096; q++) /* keep the inputs from converging */
                v[q] = (float)(q % 97) * 0.1f - 4.8f;
            printf("%-8s %-9s %8.3f ns/element\n", k->name, names[j], t / 4096 * 1e9);
        }
    }
    rnnd_pack_release(&P);
    free(W);
    free(bias);
    free(X);
    free(Y);
    free(v);
    return 0;
}
