/* Every one of the 2^32 float bit patterns through rnnd_fmt_float, read back with strtof:
 * the same bits (finite), or "" (NaN/Inf). Not run by make check (minutes of CPU):
 *
 *   make tests/fmtfloat_all && tests/fmtfloat_all [THREADS] [FIRST LAST]
 *
 * Prints the count checked and the first failures; exits 1 on any failure. Every 4096th
 * pattern is also checked for being no longer than the shortest %.*e that reads back. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rnnd/fmtfloat.h"

struct part {
    uint64_t first, last; /* [first, last) */
    uint64_t checked, bad, longer;
};

static int digits_of(const char *s)
{
    int n = 0;
    for (; *s && *s != 'e'; s++)
        n += *s >= '0' && *s <= '9';
    return n;
}

/* Significant digits of S: its digits without leading zeros (and trailing ones of an
 * integer written in full, which are not significant either). */
static int significant(const char *s)
{
    const char *p = s;
    if (*p == '-')
        p++;
    while (*p == '0' || *p == '.')
        p++;
    int n = digits_of(p);
    if (!strchr(s, '.') && !strchr(s, 'e')) {
        size_t len = strlen(p);
        while (len > 1 && p[len - 1] == '0') {
            len--;
            n--;
        }
    }
    return n;
}

static void *run(void *arg)
{
    struct part *pt = arg;
    char buf[RNND_FMT_FLOAT_MAX], ref[64];
    for (uint64_t i = pt->first; i < pt->last; i++) {
        uint32_t bits = (uint32_t)i;
        float v, back;
        memcpy(&v, &bits, sizeof v);
        size_t n = rnnd_fmt_float(v, buf);
        pt->checked++;
        if (v != v || v - v != 0) {
            if (n != 0 || buf[0]) {
                if (pt->bad++ < 5)
                    printf("0x%08x: non-finite wrote \"%s\"\n", bits, buf);
            }
            continue;
        }
        back = strtof(buf, NULL);
        if (n != strlen(buf) || memcmp(&back, &v, sizeof v) != 0) {
            if (pt->bad++ < 5)
                printf("0x%08x (%.9g): \"%s\" reads back as %.9g\n", bits, v, buf, back);
            continue;
        }
        if ((bits & 0xfff) == 0 && v != 0) {
            int p = 1;
            for (; p < 9; p++) {
                snprintf(ref, sizeof ref, "%.*e", p - 1, v);
                if (strtof(ref, NULL) == v)
                    break;
            }
            if (significant(buf) > p && pt->longer++ < 5)
                printf("0x%08x: \"%s\" is longer than %d digits\n", bits, buf, p);
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    uint64_t first = argc > 3 ? strtoull(argv[2], NULL, 0) : 0;
    uint64_t last = argc > 3 ? strtoull(argv[3], NULL, 0) : (uint64_t)1 << 32;
    if (threads < 1 || threads > 256 || first >= last || last > ((uint64_t)1 << 32)) {
        fprintf(stderr, "usage: fmtfloat_all [THREADS] [FIRST LAST]\n");
        return 2;
    }
    struct part *pt = calloc((size_t)threads, sizeof *pt);
    pthread_t *th = calloc((size_t)threads, sizeof *th);
    if (!pt || !th)
        return 2;
    uint64_t span = (last - first + (uint64_t)threads - 1) / (uint64_t)threads;
    for (int t = 0; t < threads; t++) {
        pt[t].first = first + span * (uint64_t)t;
        pt[t].last = pt[t].first + span < last ? pt[t].first + span : last;
        if (pt[t].first > last)
            pt[t].first = last;
        pthread_create(&th[t], NULL, run, &pt[t]);
    }
    uint64_t checked = 0, bad = 0, longer = 0;
    for (int t = 0; t < threads; t++) {
        pthread_join(th[t], NULL);
        checked += pt[t].checked;
        bad += pt[t].bad;
        longer += pt[t].longer;
    }
    printf("fmtfloat_all: %llu patterns in [0x%llx, 0x%llx): %llu do not read back, "
           "%llu of the sampled are longer than the shortest %%.*e\n",
           (unsigned long long)checked, (unsigned long long)first, (unsigned long long)last,
           (unsigned long long)bad, (unsigned long long)longer);
    free(pt);
    free(th);
    return bad || longer ? 1 : 0;
}
