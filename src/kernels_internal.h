/* The kernel tables, one per SIMD path; kernels.c chooses among them.
 *
 * Each path lives in its own file compiled with its own -m flags (Makefile.am), so nothing
 * outside kernels_avx2.c / kernels_avx512.c may call into them except through these tables,
 * and only after CPUID said the CPU can run them. The ISA files depend on nothing in librnnd
 * (they link from separate archives placed after it). */
#ifndef RNND_KERNELS_INTERNAL_H
#define RNND_KERNELS_INTERNAL_H

#include "rnnd/kernels.h"

/* The reference: plain C, fmaf() for the gemv chain, libm for activations. */
extern const rnnd_kernels rnnd_kern_table_scalar;

#ifdef RNND_HAVE_X86
extern const rnnd_kernels rnnd_kern_table_avx2;   /* needs avx2 + fma */
extern const rnnd_kernels rnnd_kern_table_avx512; /* needs avx512 f, vl, bw, dq */
#endif

/* The int8 gemv of each path (docs/kernels.md, "int8 gemv"): each table's gemv hands an
 * RNND_WEIGHTS_I8 matrix to its path's function here. Same arguments and contract as
 * rnnd_kernels.gemv; all of them give the scalar reference's bits. */

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

/* The bf16 compute mode's gemv (RNND_PACKED_BF16DP, src/bf16dp.h): the scalar reference,
 * which every path without AVX512-BF16 runs, and VDPBF16PS, which gives its bits. */
void rnnd_gemv_bf16dp_scalar(const rnnd_packed *W, const float *bias, const float *X, size_t ldx,
                             size_t B, float *Y, size_t ldy, int row_begin, int row_end);
#ifdef RNND_HAVE_X86
/* Where CPUID has avx512_bf16 (checked per call), else rnnd_gemv_bf16dp_scalar. */
void rnnd_gemv_bf16dp_avx512(const rnnd_packed *W, const float *bias, const float *X, size_t ldx,
                             size_t B, float *Y, size_t ldy, int row_begin, int row_end);
#endif

#endif
