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

#endif
