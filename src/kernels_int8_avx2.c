/* The int8 gemv on AVX2: kernels_int8_madd.h, one input row at a time. */
#include "config.h"

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#include "rnnd/kernels.h"
#include "kernels_internal.h"
#include "kernels_int8_madd.h"

void rnnd_gemv_i8_avx2(const rnnd_packed *W, const float *bias, const float *X, size_t ldx,
                       size_t B, float *Y, size_t ldy, int row_begin, int row_end)
{
    if (row_end <= row_begin)
        return;
    for (size_t b = 0; b < B; b++)
        madd_gemv_row(W, bias, X + b * ldx, Y + b * ldy, row_begin, row_end);
}
