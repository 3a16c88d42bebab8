/* The int8 gemv reference (docs/model-format.md, "int8 weights"): one output row at a time,
 * the integer sum in int32 (exact: no order to keep), one fmaf to rescale. */
#include "config.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "rnnd/kernels.h"
#include "kernels_internal.h"
#include "quant8.h"

static void quantize(const float *x, size_t n, float sx, int8_t *xq)
{
    for (size_t k = 0; k < n; k++)
        xq[k] = (int8_t)rnnd_q8_one(x[k], sx);
}

void rnnd_gemv_i8_scalar(const rnnd_packed *W, const float *bias, const float *X, size_t ldx,
                         size_t B, float *Y, size_t ldy, int row_begin, int row_end)
{
    const size_t cols = (size_t)W->cols, kq = (cols + 3) / 4;
    const int8_t *q = W->data;
    const int one_block = cols <= RNND_Q8_BLOCK;
    int8_t xq[RNND_Q8_BLOCK];
    for (size_t b = 0; b < B; b++) {
        const float *x = X + b * ldx;
        float *y = Y + b * ldy;
        const float sx = rnnd_q8_scale(rnnd_q8_absmax_bits(x, cols));
        if (one_block)
            quantize(x, cols, sx, xq);
        for (int j = row_begin; j < row_end; j++) {
            const int8_t *wr =
                q + (size_t)(j / RNND_PANEL) * kq * 64 + (size_t)(j % RNND_PANEL) * 4;
            int32_t a = 0;
            for (size_t k0 = 0; k0 < cols; k0 += RNND_Q8_BLOCK) {
                size_t n = rnnd_q8_min(cols - k0, RNND_Q8_BLOCK);
                if (!one_block)
                    quantize(x + k0, n, sx, xq);
                for (size_t k = 0; k < n; k++)
                    a += (int32_t)wr[((k0 + k) / 4) * 64 + (k0 + k) % 4] * xq[k];
            }
            y[j] = fmaf((float)a, W->scale[j] * sx, bias ? bias[j] : 0.0f);
        }
    }
}
