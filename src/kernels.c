/* Weight packing and the choice of SIMD path (CPUID, RNND_ISA). */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef RNND_HAVE_X86
#include <cpuid.h>
#endif

#include "rnnd/kernels.h"
#include "rnnd/status.h"
#include "half.h"
#include "kernels_internal.h"

int rnnd_pack(const float *W, int rows, int cols, rnnd_packed *out)
{
    return rnnd_pack_as(W, rows, cols, RNND_WEIGHTS_F32, out);
}

int rnnd_pack_as(const float *W, int rows, int cols, int type, rnnd_packed *out)
{
    memset(out, 0, sizeof(*out));
    if (rows < 0 || cols < 0 || (W == NULL && rows > 0 && cols > 0))
        return RNND_ERR_INVALID;
    if (type != RNND_WEIGHTS_F32 && type != RNND_WEIGHTS_BF16 && type != RNND_WEIGHTS_F16)
        return RNND_ERR_INVALID;
    const size_t esize = type == RNND_WEIGHTS_F32 ? sizeof(float) : sizeof(uint16_t);

    size_t panels = ((size_t)rows + RNND_PANEL - 1) / RNND_PANEL;
    size_t per_panel = (size_t)cols * RNND_PANEL;
    if (panels != 0 && per_panel > SIZE_MAX / esize / panels)
        return RNND_ERR_NOMEM;
    size_t bytes = panels * per_panel * esize;
    if (bytes > PTRDIFF_MAX - 64) /* no object may be larger; also keeps ASan from aborting */
        return RNND_ERR_NOMEM;
    /* Never ask for 0 bytes: data stays a real pointer even for an empty matrix. */
    size_t alloc = bytes ? bytes : 64;
    alloc = (alloc + 63) & ~(size_t)63;
    void *mem = NULL;
    if (posix_memalign(&mem, 64, alloc) != 0)
        return RNND_ERR_NOMEM;
    memset(mem, 0, alloc);

    for (size_t p = 0; p < panels; p++) {
        size_t r_end = (size_t)rows - p * RNND_PANEL;
        if (r_end > RNND_PANEL)
            r_end = RNND_PANEL;
        for (size_t r = 0; r < r_end; r++) {
            const float *src = W + (p * RNND_PANEL + r) * (size_t)cols;
            size_t at = p * per_panel + r;
            for (size_t k = 0; k < (size_t)cols; k++, at += RNND_PANEL) {
                if (type == RNND_WEIGHTS_F32) {
                    ((float *)mem)[at] = src[k];
                    continue;
                }
                uint16_t h =
                    type == RNND_WEIGHTS_BF16 ? rnnd_f32_to_bf16(src[k]) : rnnd_f32_to_f16(src[k]);
                float back = type == RNND_WEIGHTS_BF16 ? rnnd_bf16_to_f32(h) : rnnd_f16_to_f32(h);
                /* finite in, inf out: beyond the type's range */
                if ((rnnd_f32_bits(back) & 0x7fffffffu) == 0x7f800000u &&
                    (rnnd_f32_bits(src[k]) & 0x7fffffffu) != 0x7f800000u) {
                    free(mem);
                    return RNND_ERR_INVALID;
                }
                ((uint16_t *)mem)[at] = h;
            }
        }
    }
    out->rows = rows;
    out->cols = cols;
    out->panels = (int)panels;
    out->type = type;
    out->data = mem;
    return RNND_OK;
}

int rnnd_pack_q8(const float *Q, const float *scale, int rows, int cols, rnnd_packed *out)
{
    memset(out, 0, sizeof(*out));
    /* 65536 * 255 * 127 < 2^31: the offset sums of vpdpbusd cannot overflow either */
    if (rows < 0 || cols < 0 || cols > 65536 || (rows > 0 && scale == NULL) ||
        (Q == NULL && rows > 0 && cols > 0))
        return RNND_ERR_INVALID;
    const size_t panels = ((size_t)rows + RNND_PANEL - 1) / RNND_PANEL;
    const size_t kq = ((size_t)cols + 3) / 4;
    if (panels != 0 && kq > SIZE_MAX / 64 / panels)
        return RNND_ERR_NOMEM;
    const size_t qbytes = panels * kq * 64, nrow = panels * RNND_PANEL;
    if (qbytes > PTRDIFF_MAX / 2)
        return RNND_ERR_NOMEM;
    /* q, then the scales, then the row sums: one block, freed as one */
    size_t alloc = ((qbytes + 63) & ~(size_t)63) + nrow * (sizeof(float) + sizeof(int32_t));
    alloc = ((alloc ? alloc : 64) + 63) & ~(size_t)63;
    void *mem = NULL;
    if (posix_memalign(&mem, 64, alloc) != 0)
        return RNND_ERR_NOMEM;
    memset(mem, 0, alloc);
    int8_t *q = mem;
    float *sc = (float *)(void *)((unsigned char *)mem + ((qbytes + 63) & ~(size_t)63));
    int32_t *qs = (int32_t *)(void *)(sc + nrow);
    for (size_t j = 0; j < (size_t)rows; j++) {
        float s = scale[j];
        if (!(s >= 0.0f) || s > 3.40282347e38f)
            goto invalid;
        sc[j] = s;
        const float *src = Q + j * (size_t)cols;
        size_t p = j / RNND_PANEL, r = j % RNND_PANEL;
        int32_t sum = 0;
        for (size_t k = 0; k < (size_t)cols; k++) {
            float v = src[k];
            if (!(v >= -127.0f && v <= 127.0f) || v != (float)(int)v)
                goto invalid;
            q[(p * kq + k / 4) * 64 + r * 4 + k % 4] = (int8_t)(int)v;
            sum += (int)v;
        }
        qs[j] = sum;
    }
    out->rows = rows;
    out->cols = cols;
    out->panels = (int)panels;
    out->type = RNND_WEIGHTS_I8;
    out->data = mem;
    out->scale = sc;
    out->qsum = qs;
    return RNND_OK;
invalid:
    free(mem);
    return RNND_ERR_INVALID;
}

int rnnd_pack_bf16dp(const float *W, int rows, int cols, rnnd_packed *out)
{
    memset(out, 0, sizeof(*out));
    if (rows < 0 || cols < 0 || (W == NULL && rows > 0 && cols > 0))
        return RNND_ERR_INVALID;
    const size_t panels = ((size_t)rows + RNND_PANEL - 1) / RNND_PANEL;
    const size_t kp = ((size_t)cols + 1) / 2;
    if (panels != 0 && kp > SIZE_MAX / 64 / panels)
        return RNND_ERR_NOMEM;
    const size_t bytes = panels * kp * 64;
    if (bytes > PTRDIFF_MAX - 64)
        return RNND_ERR_NOMEM;
    size_t alloc = ((bytes ? bytes : 64) + 63) & ~(size_t)63;
    void *mem = NULL;
    if (posix_memalign(&mem, 64, alloc) != 0)
        return RNND_ERR_NOMEM;
    memset(mem, 0, alloc);
    uint16_t *d = mem;
    for (size_t j = 0; j < (size_t)rows; j++) {
        const float *src = W + j * (size_t)cols;
        const size_t p = j / RNND_PANEL, r = j % RNND_PANEL;
        for (size_t k = 0; k < (size_t)cols; k++) {
            uint16_t h = rnnd_f32_to_bf16(src[k]);
            /* finite in, inf out: beyond bf16's range */
            if ((h & 0x7fffu) == 0x7f80u && (rnnd_f32_bits(src[k]) & 0x7fffffffu) != 0x7f800000u) {
                free(mem);
                return RNND_ERR_INVALID;
            }
            d[(p * kp + k / 2) * 32 + r * 2 + k % 2] = h;
        }
    }
    out->rows = rows;
    out->cols = cols;
    out->panels = (int)panels;
    out->type = RNND_PACKED_BF16DP;
    out->data = mem;
    return RNND_OK;
}

int rnnd_pack_typed(const float *W, const float *scale, int rows, int cols, int type,
                    rnnd_packed *out)
{
    if (type == RNND_PACKED_BF16DP)
        return rnnd_pack_bf16dp(W, rows, cols, out);
    if (type == RNND_WEIGHTS_I8)
        return rnnd_pack_q8(W, scale, rows, cols, out);
    return rnnd_pack_as(W, rows, cols, type, out);
}

void rnnd_pack_release(rnnd_packed *p)
{
    if (p == NULL)
        return;
    free(p->data);
    memset(p, 0, sizeof(*p));
}

/* Every path this build knows, worst first. */
static const rnnd_kernels *const all_paths[] = {
    &rnnd_kern_table_scalar,
#ifdef RNND_HAVE_X86
    &rnnd_kern_table_avx2,
    &rnnd_kern_table_avx512,
#endif
};
#define N_PATHS (sizeof(all_paths) / sizeof(all_paths[0]))

#ifdef RNND_HAVE_X86
/* CPUID leaf 1, ECX bit 29. Not __builtin_cpu_supports("f16c"): clang 14 (the fuzz build)
 * does not know that name. F16C uses the YMM state that the avx2 check already covers. */
static int cpu_has_f16c(void)
{
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
}
#endif

static int cpu_runs(const rnnd_kernels *k)
{
    if (k == &rnnd_kern_table_scalar)
        return 1;
#ifdef RNND_HAVE_X86
    /* __builtin_cpu_supports also checks that the OS saves the YMM/ZMM/opmask state. */
    /* f16c: vcvtph2ps for float16 weights (every AVX2 CPU has it; checked all the same) */
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
    if (k == &rnnd_kern_table_avx2)
        return avx2;
    if (k == &rnnd_kern_table_avx512)
        return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
            __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
#endif
    return 0;
}

const rnnd_kernels *rnnd_kernels_by_name(const char *name)
{
    if (name == NULL)
        return NULL;
    for (size_t i = 0; i < N_PATHS; i++)
        if (strcmp(all_paths[i]->name, name) == 0)
            return cpu_runs(all_paths[i]) ? all_paths[i] : NULL;
    return NULL;
}

int rnnd_kernels_bf16dp_native(const rnnd_kernels *k)
{
#ifdef RNND_HAVE_X86
    return k == &rnnd_kern_table_avx512 && cpu_runs(k) && __builtin_cpu_supports("avx512bf16");
#else
    (void)k;
    return 0;
#endif
}

const char *const *rnnd_kernels_available(void)
{
    /* Each path needs everything the one before it needs, so the runnable set is always a
     * prefix of all_paths: one constant list per prefix length, no state to initialise. */
    static const char *const lists[3][4] = {
        {"scalar", NULL},
        {"scalar", "avx2", NULL},
        {"scalar", "avx2", "avx512", NULL},
    };
    size_t n = 1;
    while (n < N_PATHS && cpu_runs(all_paths[n]))
        n++;
    return lists[n - 1];
}

static const rnnd_kernels *best_path(void)
{
    const rnnd_kernels *best = &rnnd_kern_table_scalar;
    for (size_t i = 1; i < N_PATHS; i++)
        if (cpu_runs(all_paths[i]))
            best = all_paths[i];
    return best;
}

const rnnd_kernels *rnnd_kernels_select(char *err, size_t errlen)
{
    const char *want = getenv("RNND_ISA");
    if (want == NULL || want[0] == '\0' || strcmp(want, "auto") == 0)
        return best_path();
    const rnnd_kernels *k = rnnd_kernels_by_name(want);
    if (k != NULL)
        return k;

    int known = 0;
    for (size_t i = 0; i < N_PATHS; i++)
        known |= strcmp(all_paths[i]->name, want) == 0;
    char avail[64] = "";
    for (const char *const *a = rnnd_kernels_available(); *a != NULL; a++) {
        if (avail[0] != '\0')
            strcat(avail, ", ");
        strcat(avail, *a);
    }
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "RNND_ISA=%s: %s; this machine can run: auto, %s", want,
                 known ? "not supported by this CPU"
                     : strcmp(want, "avx2") == 0 || strcmp(want, "avx512") == 0
                     ? "not built into this binary (not an x86-64 build)"
                     : "unknown SIMD path (expected scalar, avx2 or avx512)",
                 avail);
    return NULL;
}
