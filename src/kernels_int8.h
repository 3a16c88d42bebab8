/* The int8 gemv of each path (docs/kernels.md, "int8 gemv"): each path's table gemv hands
 * an RNND_WEIGHTS_I8 matrix to its function here. Same arguments and contract as
 * rnnd_kernels.gemv; all of them give the scalar reference's bits. */
#ifndef RNND_KERNELS_INT8_H
#define RNND_KERNELS_INT8_H

#include <stddef.h>

#include "rnnd/kernels.h"

/* Columns of an input row quantized at a time, a multiple of 4: rows up to this long are
 * quantized once per call, longer ones block by block per group of output rows. */
#define RNND_Q8_BLOCK 4096

void rnnd_gemv_i8_scalar(const rnnd_packed *W, const float *bias, const float *X, size_t ldx,
                         size_t B, float *Y, size_t ldy, int row_begin, int row_end);

#ifdef RNND_HAVE_X86
/* avx2: vpmaddwd on sign-extended int16 (vpmaddubsw saturates, so it is not used). */
void rnnd_gemv_i8_avx2(const rnnd_packed *W, const float *bias, const float *X, size_t ldx,
                       size_t B, float *Y, size_t ldy, int row_begin, int row_end);
/* avx512: vpdpbusd where the CPU has AVX512-VNNI (the input offset by +128 to unsigned, the
 * row sums of q taking it back out, exact in int32), else the avx2 method in 256 bits. */
void rnnd_gemv_i8_avx512(const rnnd_packed *W, const float *bias, const float *X, size_t ldx,
                         size_t B, float *Y, size_t ldy, int row_begin, int row_end);
#endif

#endif
