/* Generation on a session (see generate.h): one step job whose after_step hook chooses the
 * next token from each output and appends it to the job's own inputs, so the job goes back
 * into the batcher's ready queue like any multi-step request and shares every round with the
 * other sessions of the model. */
#include "generate.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batcher.h"
#include "membudget.h"
#include "rng.h"
#include "rnnd/status.h"
#include "rnnd/tokenizer.h"

struct gen {
    rnnd_step_job sj; /* first member: the batcher hands this back */
    rnnd_metrics *metrics;
    rnnd_session *s;           /* one reference */
    const rnnd_tokenizer *tok; /* NULL: ids only */
    int norm;
    size_t vocab;
    int32_t *tokens; /* the prompt, then the completion */
    size_t n_prompt;
    float *out; /* the job's last output row */
    rnnd_gen_params p;
    uint64_t seed;
    rnnd_prng prng;
    rnnd_sampler *sampler;
    rnnd_utf8_stream u;
    char *piece; /* rnnd_utf8_stream_put output, 3 * max_piece + 8 bytes */
    char *text;  /* the completion so far (NUL-terminated) */
    size_t text_len, text_cap;
    size_t n_gen; /* tokens chosen */
    int finish;   /* enum rnnd_gen_finish once decided, else -1 */
    int stop_index;
    enum rnnd_errcode code;
    char message[256];
    rnnd_gen_sink sink;
    int (*step_start)(rnnd_job *job); /* the batcher's start, after the gone() check */
};

void rnnd_gen_params_default(rnnd_gen_params *p)
{
    memset(p, 0, sizeof *p);
    p->max_tokens = 64;
    p->sampling.temperature = 1.0;
    p->sampling.top_k = 0;
    p->sampling.top_p = 1.0;
}

static int number_field(const json_t *obj, const char *name, double *out, char *err, size_t errlen)
{
    const json_t *v = json_object_get(obj, name);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_number(v)) {
        snprintf(err, errlen, "%s: expected a number", name);
        return RNND_ERR_INVALID;
    }
    *out = json_number_value(v);
    return 0;
}

int rnnd_gen_max_tokens_check(int64_t v, int64_t max, char *err, size_t errlen)
{
    if (v < 1) {
        snprintf(err, errlen, "max_tokens: expected an integer of at least 1");
        return RNND_ERR_INVALID;
    }
    if (v > max) {
        snprintf(err, errlen,
                 "max_tokens: %" PRId64 " is more than max_generate_tokens (%" PRId64 ")", v, max);
        return RNND_ERR_LIMIT;
    }
    return RNND_OK;
}

int rnnd_gen_seed_check(uint64_t seed, char *err, size_t errlen)
{
    /* jansson reads integers as signed 64-bit: 2^63..2^64-1 arrive as reals, refused */
    if (seed > INT64_MAX) {
        snprintf(err, errlen, "seed: expected an integer from 0 to 2^63-1");
        return RNND_ERR_INVALID;
    }
    return RNND_OK;
}

int rnnd_gen_stop_check(const char *s, size_t len, size_t index, char *err, size_t errlen)
{
    if (len == 0 || len > RNND_GEN_STOP_BYTES || memchr(s, 0, len)) {
        snprintf(err, errlen, "stop[%zu]: expected a non-empty string of at most %d bytes", index,
                 RNND_GEN_STOP_BYTES);
        return RNND_ERR_INVALID;
    }
    return RNND_OK;
}

int rnnd_gen_params_check(const rnnd_gen_params *p, int64_t max_tokens, char *err, size_t errlen)
{
    int rc;
    if ((rc = rnnd_gen_max_tokens_check(p->max_tokens, max_tokens, err, errlen)) ||
        (rc = rnnd_sampling_check(&p->sampling, err, errlen)) ||
        (p->has_seed && (rc = rnnd_gen_seed_check(p->seed, err, errlen))))
        return rc;
    if (p->n_stop > RNND_GEN_MAX_STOP) {
        snprintf(err, errlen, "stop: %zu strings, at most %d", p->n_stop, RNND_GEN_MAX_STOP);
        return RNND_ERR_INVALID;
    }
    for (size_t i = 0; i < p->n_stop; i++)
        if ((rc = rnnd_gen_stop_check(p->stop[i], strnlen(p->stop[i], sizeof p->stop[i]), i, err,
                                      errlen)))
            return rc;
    return RNND_OK;
}

int rnnd_gen_params_parse(const json_t *obj, int64_t max_tokens, rnnd_gen_params *p, char *err,
                          size_t errlen)
{
    const json_t *v = json_object_get(obj, "max_tokens");
    if (v && !json_is_null(v)) {
        int rc = json_is_integer(v)
            ? rnnd_gen_max_tokens_check(json_integer_value(v), max_tokens, err, errlen)
            : rnnd_gen_max_tokens_check(0, max_tokens, err, errlen);
        if (rc)
            return rc;
        p->max_tokens = json_integer_value(v);
    }
    int rc;
    double t = p->sampling.temperature, tp = p->sampling.top_p;
    if ((rc = number_field(obj, "temperature", &t, err, errlen)) ||
        (rc = number_field(obj, "top_p", &tp, err, errlen)))
        return rc;
    p->sampling.temperature = t;
    p->sampling.top_p = tp;
    v = json_object_get(obj, "top_k");
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX) {
            snprintf(err, errlen, "top_k: expected an integer of at least 0 (0: no limit)");
            return RNND_ERR_INVALID;
        }
        p->sampling.top_k = (int32_t)json_integer_value(v);
    }
    if ((rc = rnnd_sampling_check(&p->sampling, err, errlen)))
        return rc;
    v = json_object_get(obj, "seed");
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return rnnd_gen_seed_check(UINT64_MAX, err, errlen);
        p->has_seed = 1;
        p->seed = (uint64_t)json_integer_value(v);
    }
    v = json_object_get(obj, "stop");
    if (v && !json_is_null(v)) {
        size_t n = json_is_string(v) ? 1 : json_is_array(v) ? json_array_size(v) : 0;
        if (!json_is_string(v) && !json_is_array(v)) {
            snprintf(err, errlen, "stop: expected a string or a list of strings");
            return RNND_ERR_INVALID;
        }
        if (n > RNND_GEN_MAX_STOP) {
            snprintf(err, errlen, "stop: %zu strings, at most %d", n, RNND_GEN_MAX_STOP);
            return RNND_ERR_INVALID;
        }
        p->n_stop = 0;
        for (size_t i = 0; i < n; i++) {
            const json_t *e = json_is_string(v) ? v : json_array_get(v, i);
            size_t len = json_is_string(e) ? json_string_length(e) : 0;
            if ((rc = rnnd_gen_stop_check(json_is_string(e) ? json_string_value(e) : "", len, i,
                                          err, errlen)))
                return rc;
            memcpy(p->stop[i], json_string_value(e), len + 1);
            p->n_stop++;
        }
    }
    return RNND_OK;
}

static void gen_free(struct gen *g)
{
    rnnd_session_unref(g->s);
    rnnd_sampler_free(g->sampler);
    free(g->tokens);
    free(g->out);
    free(g->piece);
    free(g->text);
    free(g);
}

static int text_append(struct gen *g, const char *s, size_t n)
{
    if (g->text_len + n + 1 > g->text_cap) {
        size_t cap = g->text_cap * 2;
        while (cap < g->text_len + n + 1)
            cap *= 2;
        char *t = realloc(g->text, cap);
        if (!t)
            return -1;
        g->text = t;
        g->text_cap = cap;
    }
    memcpy(g->text + g->text_len, s, n);
    g->text_len += n;
    g->text[g->text_len] = '\0';
    return 0;
}

/* A stop string that ends within the last NEW bytes of the text: its index, or -1. */
static int stop_match(const struct gen *g, size_t added)
{
    for (size_t i = 0; i < g->p.n_stop; i++) {
        size_t sl = strlen(g->p.stop[i]);
        if (sl > g->text_len)
            continue;
        size_t from = g->text_len - added;
        from = from >= sl - 1 ? from - (sl - 1) : 0;
        if (memmem(g->text + from, g->text_len - from, g->p.stop[i], sl))
            return (int)i;
    }
    return -1;
}

static void end_with_error(struct gen *g, enum rnnd_errcode code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void end_with_error(struct gen *g, enum rnnd_errcode code, const char *fmt, ...)
{
    g->finish = RNND_GEN_ERROR;
    g->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->message, sizeof g->message, fmt, ap);
    va_end(ap);
}

/* Whether the session left this node (the sink's gone()): the generation ends with 503. */
static int moved_away(struct gen *g)
{
    if (!g->sink.gone || !g->sink.gone(g->sink.arg))
        return 0;
    end_with_error(g, RNND_E_UNAVAILABLE, "%s", RNND_GEN_MOVED_MSG);
    return 1;
}

/* The job reached the head of its session's queue: nothing runs on a copy that left this
 * node (a hand-over queued before this job gave the session away). */
static int gen_start(rnnd_job *job)
{
    struct gen *g = (struct gen *)job;
    if (moved_away(g)) {
        g->sj.steps = rnnd_session_steps(job->session);
        return RNND_JOB_DONE;
    }
    return g->step_start(job);
}

/* After each step of the job: on the worker, the session's state block ours. */
static void gen_after_step(rnnd_step_job *j, const float *row)
{
    struct gen *g = (struct gen *)j;
    j->n_steps = j->done; /* ends here unless a token is chosen below */
    if (g->finish >= 0)   /* decided when the last token was chosen; it is now fed */
        return;
    if (g->sink.cancelled && g->sink.cancelled(g->sink.arg)) {
        g->finish = RNND_GEN_CANCELLED;
        return;
    }
    if (moved_away(g))
        return;
    if (j->done < g->n_prompt) {
        j->n_steps = g->n_prompt;
        return;
    }
    int32_t id = rnnd_sample(g->sampler, row, g->vocab, g->norm, &g->p.sampling, &g->prng);
    if (id < 0) {
        end_with_error(g, RNND_E_NUMERIC_ERROR,
                       "the model's output is NaN or infinite after step "
                       "%" PRIu64 "; the session keeps that state",
                       rnnd_session_steps(j->job.session));
        return;
    }
    g->tokens[j->n_steps++] = id;
    size_t index = g->n_gen++;
    size_t plen = 0, tlen = 0;
    if (g->tok) {
        const char *piece = rnnd_tokenizer_piece(g->tok, id, &plen);
        tlen = rnnd_utf8_stream_put(&g->u, piece, plen, g->piece);
        if (text_append(g, g->piece, tlen)) {
            g->tokens[--j->n_steps] = 0;
            g->n_gen--;
            end_with_error(g, RNND_E_OUT_OF_MEMORY,
                           "out of memory for the text after %" PRIu64 " tokens",
                           (uint64_t)g->n_gen);
            return;
        }
        int si = stop_match(g, tlen);
        if (si >= 0) {
            g->finish = RNND_GEN_STOP;
            g->stop_index = si;
        }
    }
    if (g->finish < 0 && g->n_gen == (size_t)g->p.max_tokens)
        g->finish = RNND_GEN_LENGTH;
    if (g->sink.token)
        g->sink.token(g->sink.arg, id, g->piece, tlen, index,
                      rnnd_session_steps(j->job.session) + 1);
}

/* The job left the session's queue: report and free. */
static void gen_finish(rnnd_job *job)
{
    struct gen *g = (struct gen *)job;
    rnnd_step_job *j = &g->sj;
    if (j->outcome == RNND_STEP_STOPPED) {
        g->finish = RNND_GEN_ERROR;
        g->code = RNND_E_UNAVAILABLE;
        snprintf(g->message, sizeof g->message, "the server is shutting down");
    } else if (j->outcome == RNND_STEP_FAILED) {
        g->finish = RNND_GEN_ERROR;
        g->code = rnnd_errcode_of(j->status);
        snprintf(g->message, sizeof g->message, "%s", j->err);
    } else if (g->finish < 0) {
        g->finish = RNND_GEN_LENGTH; /* not reached: every path decides */
    }
    if (g->tok) {
        char tail[8];
        size_t n = rnnd_utf8_stream_flush(&g->u, tail);
        if (n)
            text_append(g, tail, n); /* on failure the text just lacks the U+FFFD */
    }
    rnnd_gen_result res = {
        .finish = g->finish,
        .code = g->code,
        .prompt_tokens = j->done < g->n_prompt ? j->done : g->n_prompt,
        .completion_tokens = j->done > g->n_prompt ? j->done - g->n_prompt : 0,
        .steps = j->steps,
        .seed = g->seed,
        .stop_index = g->finish == RNND_GEN_STOP ? g->stop_index : -1,
        .text = g->text,
        .text_len = g->text_len,
        .tokens = g->tokens + g->n_prompt,
    };
    snprintf(res.message, sizeof res.message, "%s", g->message);
    atomic_fetch_add(&g->metrics->generations[g->finish], 1);
    atomic_fetch_add(&g->metrics->generated_tokens, g->n_gen);
    atomic_fetch_sub(&g->metrics->generations_active, 1);
    g->sink.done(g->sink.arg, &res);
    gen_free(g);
}

size_t rnnd_gen_max_piece(const rnnd_entry *e)
{
    const rnnd_model_spec *spec = rnnd_model_get_spec(e->model);
    size_t max_piece = 1;
    if (e->tokenizer) {
        for (int i = 0; i < spec->vocab_size; i++) {
            size_t n;
            rnnd_tokenizer_piece(e->tokenizer, i, &n);
            if (n > max_piece)
                max_piece = n;
        }
    }
    return max_piece;
}

/* Sizes of the engine's fixed pieces and of the reply's frame: generous bounds. */
#define SAMPLER_CAND 16
#define GEN_FRAME 2048

size_t rnnd_gen_bytes(const rnnd_entry *e, size_t n_prompt, int64_t max_tokens, size_t token_reply)
{
    size_t T = max_tokens > 0 ? (size_t)max_tokens : 0, V = (size_t)e->output_dim;
    /* what one token can add to the text: its piece, each byte possibly made U+FFFD */
    size_t piece = rnnd_sat_add(rnnd_sat_mul(3, rnnd_gen_max_piece(e)), 8);
    size_t bytes = rnnd_sat_mul(rnnd_sat_add(n_prompt, T), sizeof(int32_t)); /* ids */
    bytes = rnnd_sat_add(bytes, rnnd_sat_mul(V, sizeof(float) + SAMPLER_CAND));
    bytes = rnnd_sat_add(bytes, piece);
    /* the text, grown by doubling */
    bytes = rnnd_sat_add(bytes, rnnd_sat_mul(rnnd_sat_mul(2, T), piece));
    /* the reply: each token's text escaped (up to 6 bytes a byte) and its own frame */
    size_t per = rnnd_sat_add(token_reply, rnnd_sat_mul(6, piece));
    bytes = rnnd_sat_add(bytes, rnnd_sat_mul(T, per));
    return rnnd_sat_add(bytes, GEN_FRAME);
}

int rnnd_generate(rnnd_metrics *metrics, rnnd_session *s, const int32_t *prompt, size_t n_prompt,
                  const rnnd_gen_params *p, const rnnd_gen_sink *sink, char *err, size_t errlen)
{
    const rnnd_entry *e = rnnd_session_model(s);
    const rnnd_model_spec *spec = rnnd_model_get_spec(e->model);
    struct gen *g = calloc(1, sizeof *g);
    if (!g) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    g->s = rnnd_session_ref(s);
    g->tok = e->tokenizer;
    g->norm = spec->has_head ? spec->head_norm : RNND_NORM_NONE;
    g->vocab = (size_t)e->output_dim;
    g->n_prompt = n_prompt;
    g->p = *p;
    g->finish = -1;
    g->stop_index = -1;
    g->sink = *sink;
    g->text_cap = 256;
    size_t max_piece = rnnd_gen_max_piece(e);
    g->tokens = malloc((n_prompt + (size_t)p->max_tokens) * sizeof *g->tokens);
    g->out = malloc(g->vocab * sizeof *g->out);
    g->piece = malloc(3 * max_piece + 8);
    g->text = malloc(g->text_cap);
    g->sampler = rnnd_sampler_new(g->vocab);
    if (!g->tokens || !g->out || !g->piece || !g->text || !g->sampler) {
        gen_free(g);
        snprintf(err, errlen, "out of memory for a generation of %" PRId64 " tokens",
                 p->max_tokens);
        return -1;
    }
    g->text[0] = '\0';
    g->piece[0] = '\0';
    rnnd_utf8_stream_init(&g->u);
    memcpy(g->tokens, prompt, n_prompt * sizeof *prompt);
    g->seed = p->seed;
    if (!p->has_seed && rnnd_random_bytes(&g->seed, sizeof g->seed)) {
        gen_free(g);
        snprintf(err, errlen, "no randomness for a seed");
        return -1;
    }
    g->seed &= INT64_MAX; /* reported seeds can be sent back (JSON integers are signed) */
    rnnd_prng_seed(&g->prng, g->seed);

    rnnd_step_job_init(&g->sj, e->batcher);
    g->step_start = g->sj.job.start;
    g->sj.job.start = gen_start;
    g->sj.job.finish = gen_finish;
    g->sj.n_steps = n_prompt;
    g->sj.tokens = g->tokens;
    g->sj.last_only = 1;
    g->sj.out = g->out;
    g->sj.if_steps = -1;
    g->sj.after_step = gen_after_step;
    g->metrics = metrics;
    atomic_fetch_add(&metrics->generations_active, 1);
    int why = rnnd_session_submit(s, &g->sj.job);
    if (why != RNND_SESSION_FOUND) {
        atomic_fetch_sub(&metrics->generations_active, 1);
        gen_free(g);
        return why;
    }
    return RNND_SESSION_FOUND;
}
