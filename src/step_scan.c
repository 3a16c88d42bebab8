/* The direct decoder of step bodies (rnnd/step_scan.h). Everything that is not plainly the
 * common shape declines: the jansson path behind it knows every error message, so this file
 * only has to be exact on what it accepts. tests/check_step_scan.c and the fuzz harness
 * tests/fuzz/fuzz_step_scan.c compare it with that path. */
#include "rnnd/step_scan.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rnnd/status.h"

#define DECLINE RNND_ERR_UNSUPPORTED

/* As in state_json.c: FLT_MAX plus half an ulp, exclusive, is where float rounding overflows;
 * the jansson path refuses numbers from there on. */
#define FLOAT_ROUND_LIMIT ((double)FLT_MAX + 0x1p103)

/* Mantissas up to 2^53 and powers of ten up to 10^22 are exact doubles, so one multiply or
 * divide gives the correctly rounded value (Clinger's fast path). */
#define EXACT_MANTISSA ((uint64_t)1 << 53)
static const double pow10_exact[23] = {
    1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

/* The longest number text the strtod fallback takes; longer ones decline. */
#define NUMBER_MAX 64

enum num_kind { NUM_BAD, NUM_INT, NUM_REAL };

struct scanner {
    const char *p, *end;
};

static void skip_ws(struct scanner *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t'))
        s->p++;
}

/* After a list element and any whitespace: 1 at ',' (consumed, with the whitespace after
 * it), 0 at CLOSE (consumed), -1 at anything else. */
static int list_next(struct scanner *s, char close)
{
    skip_ws(s);
    if (s->p < s->end && *s->p == ',') {
        s->p++;
        skip_ws(s);
        return 1;
    }
    if (s->p < s->end && *s->p == close) {
        s->p++;
        return 0;
    }
    return -1;
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* One JSON number at s->p. An integer (no fraction, no exponent) is what jansson makes a
 * JSON integer: its value in *IVAL; more than 18 digits decline, well inside int64 (jansson
 * refuses what does not fit). Anything else is a real: strtod's value in *DVAL; one that
 * overflows a double declines (jansson refuses it). */
static enum num_kind scan_number(struct scanner *s, int64_t *ival, double *dval)
{
    const char *p = s->p, *start = p, *end = s->end;
    int neg = 0;
    if (p < end && *p == '-') {
        neg = 1;
        p++;
    }
    if (p >= end || !is_digit(*p))
        return NUM_BAD;
    uint64_t m = 0;
    int nd = 0;      /* digits in M, leading zeros not counted */
    int many = 0;    /* more than 19 of them: M is not the whole mantissa */
    int32_t e10 = 0; /* the value is M x 10^e10 (unless MANY) */
    if (*p == '0') {
        p++;
    } else {
        while (p < end && is_digit(*p)) {
            if (nd < 19)
                m = m * 10 + (uint64_t)(*p - '0');
            else
                many = 1;
            nd++;
            p++;
        }
    }
    int is_int = 1;
    if (p < end && *p == '.') {
        is_int = 0;
        p++;
        if (p >= end || !is_digit(*p))
            return NUM_BAD;
        while (p < end && is_digit(*p)) {
            if (nd < 19) {
                m = m * 10 + (uint64_t)(*p - '0');
                e10--;
                if (m)
                    nd++;
            } else {
                many = 1;
            }
            p++;
        }
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        is_int = 0;
        p++;
        int eneg = 0;
        if (p < end && (*p == '+' || *p == '-')) {
            eneg = *p == '-';
            p++;
        }
        if (p >= end || !is_digit(*p))
            return NUM_BAD;
        int32_t ev = 0;
        while (p < end && is_digit(*p)) {
            if (ev < 100000) /* far past any double; strtod below sees the real text */
                ev = ev * 10 + (*p - '0');
            p++;
        }
        e10 += eneg ? -ev : ev;
    }
    s->p = p;
    if (is_int) {
        if (nd > 18)
            return NUM_BAD;
        *ival = neg ? -(int64_t)m : (int64_t)m;
        return NUM_INT;
    }
    double d;
    if (m == 0 && !many) {
        d = 0.0;
    } else if (!many && m <= EXACT_MANTISSA && e10 >= -22 && e10 <= 22) {
        d = e10 < 0 ? (double)m / pow10_exact[-e10] : (double)m * pow10_exact[e10];
    } else {
        char tmp[NUMBER_MAX + 1];
        size_t n = (size_t)(p - start);
        if (n > NUMBER_MAX)
            return NUM_BAD;
        memcpy(tmp, start, n);
        tmp[n] = '\0';
        char *stop;
        d = strtod(tmp, &stop);
        /* a locale whose decimal point is not '.' stops early: decline */
        if (stop != tmp + n || isinf(d))
            return NUM_BAD;
        *dval = d;
        return NUM_REAL;
    }
    *dval = neg ? -d : d;
    return NUM_REAL;
}

/* A number of a vector step as the jansson path reads it (rnnd_json_float): the double, then
 * the float; numbers that do not fit float32 decline. */
static int scan_float(struct scanner *s, float *out)
{
    int64_t i;
    double d;
    switch (scan_number(s, &i, &d)) {
    case NUM_INT: d = (double)i; break;
    case NUM_REAL: break;
    default: return DECLINE;
    }
    if (!(fabs(d) < FLOAT_ROUND_LIMIT))
        return DECLINE;
    *out = (float)d;
    return 0;
}

/* A growable array of ELEM-byte items (floats or int64s). */
struct grow {
    void *data;
    size_t n, cap, elem;
};

static void *grow_next(struct grow *g)
{
    if (g->n == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 1024;
        if (cap > SIZE_MAX / g->elem)
            return NULL;
        void *d = realloc(g->data, cap * g->elem);
        if (!d)
            return NULL;
        g->data = d;
        g->cap = cap;
    }
    return (char *)g->data + g->n++ * g->elem;
}

/* "inputs": a list of integers, or of lists of numbers, all the same length. */
static int scan_inputs(struct scanner *s, long max_depth, size_t max_steps, rnnd_step_scan *out)
{
    if (max_depth < 2 || s->p >= s->end || *s->p != '[')
        return DECLINE;
    s->p++;
    skip_ws(s);
    if (s->p >= s->end || *s->p == ']')
        return DECLINE; /* empty: the jansson path says so */
    int vectors = *s->p == '[';
    if (vectors && max_depth < 3)
        return DECLINE;
    struct grow g = {NULL, 0, 0, vectors ? sizeof(float) : sizeof(int64_t)};
    size_t steps = 0, width = 0;
    int rc = DECLINE;
    for (;;) {
        if (++steps > max_steps)
            goto out;
        if (vectors) {
            if (s->p >= s->end || *s->p != '[')
                goto out;
            s->p++;
            skip_ws(s);
            size_t w = 0;
            if (s->p < s->end && *s->p == ']')
                goto out; /* an empty step */
            for (;;) {
                float *f = grow_next(&g);
                if (!f) {
                    rc = RNND_ERR_NOMEM;
                    goto out;
                }
                if (scan_float(s, f))
                    goto out;
                w++;
                int more = list_next(s, ']');
                if (more < 0)
                    goto out;
                if (!more)
                    break;
            }
            if (steps == 1)
                width = w;
            else if (w != width)
                goto out; /* ragged: some step has the wrong length for any model */
        } else {
            int64_t *id = grow_next(&g);
            double unused;
            if (!id) {
                rc = RNND_ERR_NOMEM;
                goto out;
            }
            if (scan_number(s, id, &unused) != NUM_INT)
                goto out;
        }
        int more = list_next(s, ']');
        if (more < 0)
            goto out;
        if (!more)
            break;
    }
    out->n_steps = steps;
    out->width = width;
    if (vectors)
        out->vectors = g.data;
    else
        out->ids = g.data;
    return 0;
out:
    free(g.data);
    return rc;
}

/* A key without escapes: which of the three, or -1. */
static int scan_key(struct scanner *s)
{
    static const char *const keys[] = {"inputs", "outputs", "if_steps"};
    if (s->p >= s->end || *s->p != '"')
        return -1;
    const char *k = ++s->p;
    while (s->p < s->end && *s->p != '"') {
        if (*s->p == '\\' || (unsigned char)*s->p < 0x20 || (unsigned char)*s->p >= 0x80)
            return -1;
        s->p++;
    }
    if (s->p >= s->end)
        return -1;
    size_t n = (size_t)(s->p - k);
    s->p++;
    for (int i = 0; i < 3; i++)
        if (strlen(keys[i]) == n && !memcmp(k, keys[i], n))
            return i;
    return -1;
}

int rnnd_step_scan_parse(const char *data, size_t len, long max_depth, size_t max_steps,
                         rnnd_step_scan *out)
{
    struct scanner s = {data, data + len};
    memset(out, 0, sizeof *out);
    out->if_steps = -1;
    int seen[3] = {0, 0, 0};
    int rc = DECLINE;

    skip_ws(&s);
    if (max_depth < 1 || s.p >= s.end || *s.p != '{')
        return DECLINE;
    s.p++;
    skip_ws(&s);
    for (;;) {
        int key = scan_key(&s);
        if (key < 0 || seen[key])
            goto fail;
        seen[key] = 1;
        skip_ws(&s);
        if (s.p >= s.end || *s.p != ':')
            goto fail;
        s.p++;
        skip_ws(&s);
        if (key == 0) {
            rc = scan_inputs(&s, max_depth, max_steps, out);
            if (rc)
                goto fail;
            rc = DECLINE;
        } else if (key == 1) {
            static const char all[] = "\"all\"", last[] = "\"last\"";
            size_t left = (size_t)(s.end - s.p);
            if (left >= sizeof all - 1 && !memcmp(s.p, all, sizeof all - 1)) {
                s.p += sizeof all - 1;
            } else if (left >= sizeof last - 1 && !memcmp(s.p, last, sizeof last - 1)) {
                s.p += sizeof last - 1;
                out->last_only = 1;
            } else {
                goto fail;
            }
        } else {
            double unused;
            if (scan_number(&s, &out->if_steps, &unused) != NUM_INT || out->if_steps < 0)
                goto fail;
        }
        int more = list_next(&s, '}');
        if (more < 0)
            goto fail;
        if (!more)
            break;
    }
    skip_ws(&s);
    if (s.p != s.end || !seen[0])
        goto fail;
    return 0;
fail:
    rnnd_step_scan_clear(out);
    return rc;
}

void rnnd_step_scan_clear(rnnd_step_scan *s)
{
    free(s->vectors);
    free(s->ids);
    memset(s, 0, sizeof *s);
    s->if_steps = -1;
}
