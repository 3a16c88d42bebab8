/* One core's measured sgemm peak for `rnnd bench --sgemm` (src/bench_peak.c). */
#ifndef RNND_BENCH_PEAK_H
#define RNND_BENCH_PEAK_H

/* OpenBLAS's sgemm of two N x N matrices on one thread: the best GFLOP/s of the calls made in
 * SECONDS (at least 3 timed, after one to warm up). Negative when out of memory. */
double rnnd_sgemm_peak(int N, double seconds);

/* The core type OpenBLAS chose (OPENBLAS_CORETYPE or its CPU detection), or "unknown". */
const char *rnnd_blas_core(void);

#endif
