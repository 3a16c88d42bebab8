/* The Redis session store (src/store_*.c, include/rnnd/store.h, docs/cluster.md), against a
 * real redis-server that each test starts on a free loopback port (tools/setup installs it; a
 * missing redis-server fails the test, it never skips).
 *
 * test_url: good URLs parse (user, IPv6, no /DB); a password, a missing or bad port, a bad
 * host or user, junk after /DB are refused, and the message never quotes the password.
 * test_record_roundtrip: encode then decode gives back every field and the state bitwise
 * (-0, a subnormal, the largest float, clockwork counters), the state bytes little-endian;
 * a step encoding carries steps and state only.
 * test_record_refused: decode refuses a state one byte short or 4 long, a NaN, an infinity, a
 * counter that is not a step count, another model's digest (conflict), a missing, repeated or
 * unknown field, a bad version, owner, number, holder or gen; a ttl or max_tokens above the
 * settings is lowered to them, as a restore does.
 * test_acquire: a created record is free; acquiring it raises the epoch to 1 and hands back a
 * record that decodes; acquiring again with the current seq says CURRENT without the state; a
 * second creation of the id is refused; an unknown id is MISSING; a bad id never reaches Redis.
 * test_fence: while node a holds a session, node b gets HELD naming a; after a releases, b takes
 * it at epoch 2 and a's write with its stale epoch is refused by Redis (the state stays b's);
 * a write or creation of the fence's own fields (epoch, holder) is refused before Redis;
 * SCRIPT FLUSH on the server is survived (NOSCRIPT: reloaded).
 * test_lease: renewals keep a's lease past lease_ms; without them it lapses, b takes a's session
 * (from a dead node), a's renewal reports the lapse, a re-registers; a second incarnation of a
 * live name waits and gives up (busy) after its wait.
 * test_threads: four threads writing through one store: every write goes through (the store's
 * mutex serializes them on its one hiredis context) and each is counted in seq.
 * test_auth: redis-server with requirepass: the password file's password gets in (alone, and
 * as AUTH USER PASSWORD when the URL names a user; an unknown user is refused), a wrong one
 * is refused (the message without it), none gives NOAUTH; a file that others may read, the group
 * may write, a symbolic link, a FIFO, an empty file, another user's (as root) are refused with
 * "PATH: reason"; mode 0440 is accepted. SELECT of the URL's database is used.
 * test_down: Redis not running: open succeeds with up = 0, every call is a clean RNND_ERR_IO
 * naming the server; Redis started later is reached; Redis killed mid-use is again a clean
 * error, never a crash. */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <hiredis.h>
#include <math.h>
#include <pthread.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "generate.h"
#include "rnnd/model.h"
#include "rnnd/status.h"
#include "rnnd/store.h"
#include "testutil.h"

/* ---- a redis-server of the test's own -------------------------------------------------------- */

static pid_t redis_pid = -1;
static int redis_port;
static char dir[512];

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* Start redis-server on PORT (REQUIREPASS may be NULL) and wait until it answers PING. */
static void redis_start(int port, const char *requirepass)
{
    char p[16];
    snprintf(p, sizeof p, "%d", port);
    redis_pid = fork();
    ck_assert_int_ge(redis_pid, 0);
    if (redis_pid == 0) {
        /* dies with the test's process, also when a failed assertion ends it early */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        char pass[64];
        snprintf(pass, sizeof pass, "%s", requirepass ? requirepass : "");
        char *argv[] = {"redis-server",
                        "--port",
                        p,
                        "--bind",
                        "127.0.0.1",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        dir,
                        "--loglevel",
                        "warning",
                        requirepass ? "--requirepass" : NULL,
                        pass,
                        NULL};
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        execvp("redis-server", argv);
        fprintf(stderr, "redis-server: %s (tools/setup installs Debian's redis-server)\n",
                strerror(errno));
        _exit(127);
    }
    for (int i = 0; i < 500; i++) {
        redisContext *c = redisConnect("127.0.0.1", port);
        int ok = c && !c->err;
        redisFree(c);
        if (ok)
            return;
        int status;
        ck_assert_msg(waitpid(redis_pid, &status, WNOHANG) == 0,
                      "redis-server exited at once (is it installed? tools/setup installs it)");
        sleep_ms(10);
    }
    ck_abort_msg("redis-server did not answer on port %d within 5 s", port);
}

static void redis_kill(void)
{
    if (redis_pid > 0) {
        kill(redis_pid, SIGKILL);
        waitpid(redis_pid, NULL, 0);
    }
    redis_pid = -1;
}

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN); /* as the daemon blocks it: a write to a dead Redis is an error */
    const char *tmp = tu_tmpdir();
    ck_assert_ptr_nonnull(tmp);
    snprintf(dir, sizeof dir, "%s/store-XXXXXX", tmp);
    ck_assert_ptr_nonnull(mkdtemp(dir));
    redis_port = free_port();
}

static void teardown(void) { redis_kill(); }

static char url[128];

static rnnd_store *open_node(const char *node, int64_t lease_ms, const char *pwfile)
{
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", redis_port);
    rnnd_store_conf conf = {url, pwfile, node, lease_ms, 1000};
    rnnd_store *s;
    int up = 0;
    char err[256] = "";
    ck_assert_int_eq(rnnd_store_open(&conf, &s, &up, err, sizeof err), 0);
    ck_assert_msg(up, "%s", err);
    ck_assert_int_eq(rnnd_store_register(s, 0, err, sizeof err), 0);
    return s;
}

/* A raw command on the test's own connection (inspection and sabotage). */
static redisReply *raw(const char *fmt, const char *arg)
{
    redisContext *c = redisConnect("127.0.0.1", redis_port);
    ck_assert(c && !c->err);
    redisReply *r = redisCommand(c, fmt, arg);
    redisFree(c);
    ck_assert_ptr_nonnull(r);
    return r;
}

/* ---- the URL ------------------------------------------------------------------------------ */

START_TEST(test_url)
{
    rnnd_store_url u;
    char err[256];
    ck_assert_int_eq(rnnd_store_url_parse("redis://alice@db.example:6380/3", &u, err, sizeof err),
                     0);
    ck_assert_str_eq(u.user, "alice");
    ck_assert_str_eq(u.host, "db.example");
    ck_assert_int_eq(u.port, 6380);
    ck_assert_int_eq(u.db, 3);
    ck_assert_int_eq(rnnd_store_url_parse("redis://[::1]:7000", &u, err, sizeof err), 0);
    ck_assert_str_eq(u.host, "::1");
    ck_assert_str_eq(u.user, "");
    ck_assert_int_eq(u.port, 7000);
    ck_assert_int_eq(u.db, 0);

    ck_assert_int_eq(rnnd_store_url_parse("redis://u:s3cr3t-pw@h:1/0", &u, err, sizeof err),
                     RNND_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err, "password in the URL is refused"));
    ck_assert_ptr_null(strstr(err, "s3cr3t"));
    ck_assert_int_eq(rnnd_store_url_parse("redis://:s3cr3t@h:1", &u, err, sizeof err),
                     RNND_ERR_INVALID);
    ck_assert_ptr_null(strstr(err, "s3cr3t"));

    static const struct {
        const char *url, *msg;
    } bad[] = {
        {"http://h:1/0", "expected redis://"},      {"redis://h/0", "expected ':PORT'"},
        {"redis://h", "expected ':PORT'"},          {"redis://h:0/0", "port must be"},
        {"redis://h:65536/0", "port must be"},      {"redis://h:12a/0", "port must be"},
        {"redis://h:/0", "port must be"},           {"redis://:6379/0", "host must be"},
        {"redis://h_x:1/0", "host may hold only"},  {"redis://h%41:1/0", "host may hold only"},
        {"redis://[::1:1/0", "'[' without ']'"},    {"redis://[zz]:1/0", "IPv6"},
        {"redis://@h:1/0", "user before '@'"},      {"redis://a b@h:1/0", "user may hold only"},
        {"redis://a@b@h:1/0", "more than one '@'"}, {"redis://h:1/", "expected /DB"},
        {"redis://h:1/x", "expected /DB"},          {"redis://h:1/0?x=1", "expected /DB"},
        {"redis://h:1/1234567", "expected /DB"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        ck_assert_int_eq(rnnd_store_url_parse(bad[i].url, &u, err, sizeof err), RNND_ERR_INVALID);
        ck_assert_msg(strstr(err, bad[i].msg), "%s: got \"%s\", want \"%s\"", bad[i].url, err,
                      bad[i].msg);
    }
}
END_TEST

/* ---- the record --------------------------------------------------------------------------- */

/* an LSTM then a clockwork layer: the state is h c (5 + 5), then h (6) and the counter (2) */
#define ARCH \
    "{\"format_version\":1,\"input\":{\"kind\":\"vectors\",\"dim\":3},\"layers\":[" \
    "{\"type\":\"lstm\",\"hidden_size\":5,\"direction\":\"forward\"}," \
    "{\"type\":\"clockwork\",\"hidden_size\":6,\"direction\":\"forward\",\"periods\":[1,2]}]}"
#define N_FLOATS 18
#define COUNTER 16

static rnnd_model *model(unsigned seed)
{
    rnnd_model *m;
    char err[256];
    ck_assert_msg(rnnd_model_random(ARCH, seed, 0.5f, &m, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(rnnd_model_state_floats(m), N_FLOATS);
    return m;
}

static void fill_state(float *st)
{
    for (int i = 0; i < N_FLOATS; i++)
        st[i] = (float)(i - 7) / 3.0f;
    st[0] = -0.0f;
    st[1] = 1e-40f; /* subnormal */
    st[2] = 3.4028235e38f;
    st[COUNTER] = 12345.0f;
    st[COUNTER + 1] = 0.0f;
}

static const rnnd_store_limits lim = {86400, 4096};

static void fill_rec(rnnd_store_rec *r, const rnnd_model *m, const float *st)
{
    memset(r, 0, sizeof *r);
    snprintf(r->model, sizeof r->model, "m-é");
    snprintf(r->digest, sizeof r->digest, "%s", rnnd_model_digest(m));
    r->owner = 0x8000000000000001ull;
    r->steps = 9007199254740993ull;
    r->created = 1700000000;
    r->ttl_s = 600;
    r->has_gen = 1;
    r->state = st;
    r->n_floats = N_FLOATS;
}

static void fill_gen(rnnd_gen_params *g)
{
    rnnd_gen_params_default(g);
    g->max_tokens = 77;
    g->sampling.temperature = 0.1 + 0.2; /* 0.30000000000000004: every digit must survive */
    g->sampling.top_k = 5;
    g->sampling.top_p = 0.9;
    g->has_seed = 1;
    g->seed = 9007199254740993ull;
    g->n_stop = 2;
    snprintf(g->stop[0], sizeof g->stop[0], "\n\n");
    snprintf(g->stop[1], sizeof g->stop[1], "\"end\\é");
}

/* FIELDS plus what the scripts keep (holder, epoch, seq, used_ms) into KV. */
static size_t with_lease(const rnnd_store_fields *f, rnnd_store_kv *kv)
{
    memcpy(kv, f->kv, f->n * sizeof *kv);
    size_t n = f->n;
    kv[n++] = (rnnd_store_kv){"holder", "n1 7", 4};
    kv[n++] = (rnnd_store_kv){"epoch", "3", 1};
    kv[n++] = (rnnd_store_kv){"seq", "12", 2};
    kv[n++] = (rnnd_store_kv){"used_ms", "1700000000123", 13};
    return n;
}

START_TEST(test_record_roundtrip)
{
    rnnd_model *m = model(1);
    float st[N_FLOATS], back[N_FLOATS];
    fill_state(st);
    rnnd_store_rec r, d;
    rnnd_gen_params g, gd;
    fill_rec(&r, m, st);
    fill_gen(&g);
    rnnd_store_fields f;
    char err[256];
    ck_assert_msg(rnnd_store_rec_encode(&r, &g, RNND_STORE_ENC_ALL, &f, err, sizeof err) == 0, "%s",
                  err);
    /* little-endian on the wire, whatever the host */
    const rnnd_store_kv *state = NULL;
    for (size_t i = 0; i < f.n; i++)
        if (!strcmp(f.kv[i].name, "state"))
            state = &f.kv[i];
    ck_assert_ptr_nonnull(state);
    ck_assert_uint_eq(state->len, 4 * N_FLOATS);
    uint32_t u;
    memcpy(&u, &st[3], 4);
    for (int b = 0; b < 4; b++)
        ck_assert_uint_eq((unsigned char)state->val[12 + b], (u >> (8 * b)) & 0xff);

    rnnd_store_kv kv[RNND_STORE_MAX_FIELDS];
    size_t n = with_lease(&f, kv);
    ck_assert_msg(rnnd_store_rec_decode(kv, n, m, &lim, &d, back, &gd, err, sizeof err) == 0, "%s",
                  err);
    ck_assert_int_eq(memcmp(back, st, sizeof st), 0);
    ck_assert_ptr_eq(d.state, back);
    ck_assert_uint_eq(d.n_floats, N_FLOATS);
    ck_assert_str_eq(d.model, r.model);
    ck_assert_str_eq(d.digest, r.digest);
    ck_assert_uint_eq(d.owner, r.owner);
    ck_assert_uint_eq(d.steps, r.steps);
    ck_assert_int_eq(d.created, r.created);
    ck_assert_int_eq(d.ttl_s, r.ttl_s);
    ck_assert_int_eq(d.used_ms, 1700000000123ll);
    ck_assert_str_eq(d.holder, "n1 7");
    ck_assert_uint_eq(d.epoch, 3);
    ck_assert_uint_eq(d.seq, 12);
    ck_assert_int_eq(d.has_gen, 1);
    ck_assert_int_eq(gd.max_tokens, g.max_tokens);
    ck_assert_int_eq(memcmp(&gd.sampling.temperature, &g.sampling.temperature, 8), 0);
    ck_assert_int_eq(memcmp(&gd.sampling.top_p, &g.sampling.top_p, 8), 0);
    ck_assert_int_eq(gd.sampling.top_k, g.sampling.top_k);
    ck_assert_int_eq(gd.has_seed, 1);
    ck_assert_uint_eq(gd.seed, g.seed);
    ck_assert_uint_eq(gd.n_stop, 2);
    ck_assert_str_eq(gd.stop[0], g.stop[0]);
    ck_assert_str_eq(gd.stop[1], g.stop[1]);
    rnnd_store_fields_free(&f);

    /* no generation defaults: no gen field, and none decoded */
    r.has_gen = 0;
    ck_assert_int_eq(rnnd_store_rec_encode(&r, NULL, RNND_STORE_ENC_ALL, &f, err, sizeof err), 0);
    n = with_lease(&f, kv);
    ck_assert_int_eq(rnnd_store_rec_decode(kv, n, m, &lim, &d, back, &gd, err, sizeof err), 0);
    ck_assert_int_eq(d.has_gen, 0);
    rnnd_store_fields_free(&f);
    /* has_gen and GEN must agree */
    ck_assert_int_eq(rnnd_store_rec_encode(&r, &g, RNND_STORE_ENC_ALL, &f, err, sizeof err),
                     RNND_ERR_INVALID);
    rnnd_store_fields_free(&f);

    /* a step: steps and state only */
    ck_assert_int_eq(rnnd_store_rec_encode(&r, NULL, RNND_STORE_ENC_STEP, &f, err, sizeof err), 0);
    ck_assert_uint_eq(f.n, 2);
    ck_assert_str_eq(f.kv[0].name, "steps");
    ck_assert_int_eq(f.kv[0].len, 16);
    ck_assert_int_eq(memcmp(f.kv[0].val, "9007199254740993", 16), 0);
    ck_assert_str_eq(f.kv[1].name, "state");
    rnnd_store_fields_free(&f);
    rnnd_model_unref(m);
}
END_TEST

/* Decode KV with field NAME replaced by VAL (LEN bytes; NULL: removed); expect RC and MSG. */
static void refuse(const rnnd_store_kv *kv, size_t n, const rnnd_model *m, const char *name,
                   const char *val, size_t len, int rc, const char *msg)
{
    rnnd_store_kv k[RNND_STORE_MAX_FIELDS];
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(kv[i].name, name))
            k[j++] = kv[i];
        else if (val)
            k[j++] = (rnnd_store_kv){name, val, len};
    }
    rnnd_store_rec d;
    rnnd_gen_params g;
    float back[N_FLOATS];
    char err[512] = "";
    ck_assert_int_eq(rnnd_store_rec_decode(k, j, m, &lim, &d, back, &g, err, sizeof err), rc);
    ck_assert_msg(strstr(err, msg), "%s: got \"%s\", want \"%s\"", name, err, msg);
}

START_TEST(test_record_refused)
{
    rnnd_model *m = model(1), *other = model(2);
    float st[N_FLOATS];
    fill_state(st);
    rnnd_store_rec r, d;
    rnnd_gen_params g;
    fill_rec(&r, m, st);
    fill_gen(&g);
    rnnd_store_fields f;
    char err[512];
    ck_assert_int_eq(rnnd_store_rec_encode(&r, &g, RNND_STORE_ENC_ALL, &f, err, sizeof err), 0);
    rnnd_store_kv kv[RNND_STORE_MAX_FIELDS + 1];
    size_t n = with_lease(&f, kv);
    ck_assert_str_eq(f.kv[f.n - 1].name, "state"); /* encoded last */
    const char *sv = f.kv[f.n - 1].val;
    unsigned char bad[4 * N_FLOATS + 4];
    memcpy(bad, sv, 4 * N_FLOATS);
    memset(bad + 4 * N_FLOATS, 0, 4);

    refuse(kv, n, m, "state", (const char *)bad, 4 * N_FLOATS - 1, RNND_ERR_INVALID,
           "state: 71 bytes, expected 72");
    refuse(kv, n, m, "state", (const char *)bad, 4 * N_FLOATS + 4, RNND_ERR_INVALID,
           "state: 76 bytes, expected 72");
    refuse(kv, n, m, "state", "", 0, RNND_ERR_INVALID, "state: 0 bytes");
    static const unsigned char nan_le[4] = {0x00, 0x00, 0xc0, 0x7f}, inf_le[4] = {0, 0, 0x80, 0xff},
                               half_le[4] = {0, 0, 0, 0x3f};
    memcpy(bad + 20, nan_le, 4);
    refuse(kv, n, m, "state", (const char *)bad, 4 * N_FLOATS, RNND_ERR_INVALID,
           "state[5]: the number is not finite");
    memcpy(bad + 20, sv + 20, 4);
    memcpy(bad + 4 * 17, inf_le, 4);
    refuse(kv, n, m, "state", (const char *)bad, 4 * N_FLOATS, RNND_ERR_INVALID,
           "state[17]: the number is not finite");
    memcpy(bad + 4 * 17, sv + 4 * 17, 4);
    memcpy(bad + 4 * COUNTER, half_le, 4);
    refuse(kv, n, m, "state", (const char *)bad, 4 * N_FLOATS, RNND_ERR_INVALID,
           "is not a step counter");

    /* another model's digest: the conflict every state path answers */
    rnnd_store_rec_decode(kv, n, other, &lim, &d, (float[N_FLOATS]){0}, &g, err, sizeof err);
    ck_assert_int_eq(rnnd_store_rec_decode(kv, n, other, &lim, &d, (float[N_FLOATS]){0}, &g, err,
                                           sizeof err),
                     RNND_ERR_CONFLICT);
    ck_assert_ptr_nonnull(strstr(err, "digest: the state is for a model with digest"));
    refuse(kv, n, m, "digest", "abc", 3, RNND_ERR_INVALID, "digest: expected 64 hex digits");

    refuse(kv, n, m, "steps", NULL, 0, RNND_ERR_INVALID, "steps: missing from the record");
    refuse(kv, n, m, "holder", NULL, 0, RNND_ERR_INVALID, "holder: missing");
    refuse(kv, n, m, "v", "2", 1, RNND_ERR_INVALID, "v: expected a decimal integer from 0 to 1");
    refuse(kv, n, m, "v", "0", 1, RNND_ERR_INVALID, "v: record format 0");
    refuse(kv, n, m, "owner", "12345", 5, RNND_ERR_INVALID, "owner: expected 16 hex digits");
    refuse(kv, n, m, "owner", "ABCDEF0123456789", 16, RNND_ERR_INVALID, "owner: expected 16");
    refuse(kv, n, m, "steps", "9223372036854775808", 19, RNND_ERR_INVALID,
           "steps: expected a decimal integer");
    refuse(kv, n, m, "steps", "-1", 2, RNND_ERR_INVALID, "steps: expected a decimal integer");
    refuse(kv, n, m, "steps", "01", 2, RNND_ERR_INVALID, "steps: expected a decimal integer");
    refuse(kv, n, m, "epoch", "", 0, RNND_ERR_INVALID, "epoch: expected a decimal integer");
    refuse(kv, n, m, "created", "99999999999", 11, RNND_ERR_INVALID, "created: expected unix");
    refuse(kv, n, m, "ttl_s", "0", 1, RNND_ERR_INVALID, "ttl_s");
    refuse(kv, n, m, "model", "", 0, RNND_ERR_INVALID, "model: expected 1 to 255 bytes");
    refuse(kv, n, m, "model", "a\0b", 3, RNND_ERR_INVALID, "model: expected 1 to 255 bytes");
    refuse(kv, n, m, "holder", "n1", 2, RNND_ERR_INVALID, "holder: expected empty or");
    refuse(kv, n, m, "holder", "n1 x", 4, RNND_ERR_INVALID, "holder: expected empty or");
    refuse(kv, n, m, "holder", "n/1 1", 5, RNND_ERR_INVALID, "holder: expected empty or");
    refuse(kv, n, m, "gen", "[1]", 3, RNND_ERR_INVALID, "gen: expected a JSON object");
    refuse(kv, n, m, "gen", "{\"x\":1}", 7, RNND_ERR_INVALID, "gen: an unknown member");
    refuse(kv, n, m, "gen", "{\"top_p\":0}", 11, RNND_ERR_INVALID, "gen: top_p");
    refuse(kv, n, m, "gen", "{\"stop\":[\"\"]}", 13, RNND_ERR_INVALID, "gen: stop[0]");
    refuse(kv, n, m, "gen", "{\"seed\":-1}", 11, RNND_ERR_INVALID, "gen: seed");

    /* unknown and repeated fields */
    kv[n] = (rnnd_store_kv){"extra", "1", 1};
    refuse(kv, n + 1, m, "-", NULL, 0, RNND_ERR_INVALID, "an unknown field in the record");
    kv[n] = kv[0];
    refuse(kv, n + 1, m, "-", NULL, 0, RNND_ERR_INVALID, "twice in the record");

    /* above the settings: lowered as a restore lowers them */
    rnnd_store_limits low = {60, 10};
    float back[N_FLOATS];
    ck_assert_int_eq(rnnd_store_rec_decode(kv, n, m, &low, &d, back, &g, err, sizeof err), 0);
    ck_assert_int_eq(d.ttl_s, 60);
    ck_assert_int_eq(g.max_tokens, 10);
    rnnd_store_fields_free(&f);
    rnnd_model_unref(m);
    rnnd_model_unref(other);
}
END_TEST

/* ---- against Redis ------------------------------------------------------------------------ */

#define ID1 "0123456789abcdef0123456789abcdef"
#define ID2 "fedcba9876543210fedcba9876543210"

/* Create ID1 with a record of M (state ST) through S. */
static void create(rnnd_store *s, const rnnd_model *m, const float *st)
{
    rnnd_store_rec r;
    fill_rec(&r, m, st);
    r.has_gen = 0;
    rnnd_store_fields f;
    char err[256];
    ck_assert_int_eq(rnnd_store_rec_encode(&r, NULL, RNND_STORE_ENC_ALL, &f, err, sizeof err), 0);
    ck_assert_msg(rnnd_store_create(s, ID1, &f, 60000, 0, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(rnnd_store_create(s, ID1, &f, 60000, 0, err, sizeof err), RNND_ERR_CONFLICT);
    rnnd_store_fields_free(&f);
}

/* Write steps STEPS and state ST to ID1 at EPOCH through S: the write's status. */
static int write_step(rnnd_store *s, uint64_t epoch, uint64_t steps, const float *st, char *err,
                      size_t errlen)
{
    rnnd_store_rec r = {.steps = steps, .state = st, .n_floats = N_FLOATS};
    snprintf(r.model, sizeof r.model, "m");
    memset(r.digest, 'a', 64);
    rnnd_store_fields f;
    ck_assert_int_eq(rnnd_store_rec_encode(&r, NULL, RNND_STORE_ENC_STEP, &f, err, errlen), 0);
    rnnd_store_wreq w = {.id = ID1, .epoch = epoch, .ttl_ms = 60000, .fields = &f};
    int rc = rnnd_store_write(s, &w, err, errlen);
    rnnd_store_fields_free(&f);
    return rc;
}

START_TEST(test_acquire)
{
    redis_start(redis_port, NULL);
    rnnd_store *s = open_node("a", 5000, NULL);
    rnnd_model *m = model(1);
    float st[N_FLOATS], back[N_FLOATS];
    fill_state(st);
    create(s, m, st);
    char err[256];
    rnnd_store_acq a;
    ck_assert_int_eq(rnnd_store_load(s, ID1, &a, err, sizeof err), 0);
    rnnd_store_rec d;
    rnnd_gen_params g;
    ck_assert_int_eq(rnnd_store_rec_decode(a.kv, a.n, m, &lim, &d, back, &g, err, sizeof err), 0);
    ck_assert_str_eq(d.holder, "");
    ck_assert_uint_eq(d.epoch, 0);
    ck_assert_uint_eq(d.seq, 1);
    rnnd_store_acq_free(&a);

    ck_assert_msg(rnnd_store_acquire(s, ID1, 0, NULL, &a, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(a.kind, RNND_STORE_ACQ_TAKEN);
    ck_assert_uint_eq(a.epoch, 1);
    ck_assert_int_eq(a.from_dead, 0);
    memset(back, 0, sizeof back);
    ck_assert_msg(rnnd_store_rec_decode(a.kv, a.n, m, &lim, &d, back, &g, err, sizeof err) == 0,
                  "%s", err);
    ck_assert_int_eq(memcmp(back, st, sizeof st), 0);
    ck_assert_uint_eq(d.epoch, 1);
    char me[RNND_STORE_HOLDER_MAX + 1];
    rnnd_store_holder(s, me);
    ck_assert_str_eq(d.holder, me);
    uint64_t seq = d.seq;
    rnnd_store_acq_free(&a);

    /* taken again with a current copy: no state sent, the epoch still raised */
    ck_assert_int_eq(rnnd_store_acquire(s, ID1, seq, NULL, &a, err, sizeof err), 0);
    ck_assert_int_eq(a.kind, RNND_STORE_ACQ_CURRENT);
    ck_assert_uint_eq(a.epoch, 2);
    ck_assert_uint_eq(a.n, 0);
    rnnd_store_acq_free(&a);

    ck_assert_int_eq(rnnd_store_acquire(s, "ffffffffffffffffffffffffffffffff", 0, NULL, &a, err,
                                        sizeof err),
                     0);
    ck_assert_int_eq(a.kind, RNND_STORE_ACQ_MISSING);
    ck_assert_str_eq(a.gone, "");
    ck_assert_int_eq(rnnd_store_acquire(s, "rnnd:node:a", 0, NULL, &a, err, sizeof err),
                     RNND_ERR_INVALID);
    ck_assert_int_eq(rnnd_store_acquire(s, "0123456789ABCDEF0123456789ABCDEF", 0, NULL, &a, err,
                                        sizeof err),
                     RNND_ERR_INVALID);
    rnnd_store_free(s);
    rnnd_model_unref(m);
}
END_TEST

START_TEST(test_fence)
{
    redis_start(redis_port, NULL);
    rnnd_store *a = open_node("a", 5000, NULL), *b = open_node("b", 5000, NULL);
    rnnd_model *m = model(1);
    float st[N_FLOATS], back[N_FLOATS];
    fill_state(st);
    create(a, m, st);
    char err[256];
    rnnd_store_acq q;
    ck_assert_int_eq(rnnd_store_acquire(a, ID1, 0, NULL, &q, err, sizeof err), 0);
    ck_assert_uint_eq(q.epoch, 1);
    rnnd_store_acq_free(&q);
    ck_assert_msg(write_step(a, 1, 10, st, err, sizeof err) == 0, "%s", err);

    /* a holds it and lives: b is told who */
    ck_assert_int_eq(rnnd_store_acquire(b, ID1, 0, NULL, &q, err, sizeof err), 0);
    ck_assert_int_eq(q.kind, RNND_STORE_ACQ_HELD);
    char ah[RNND_STORE_HOLDER_MAX + 1];
    rnnd_store_holder(a, ah);
    ck_assert_str_eq(q.holder, ah);
    /* and b cannot write it */
    ck_assert_int_eq(write_step(b, 1, 99, st, err, sizeof err), RNND_ERR_CONFLICT);
    /* b lacks the record's model (or has it with another digest): left as it is, no hand-over
     * asked for; with the model's name and digest in its list, told who holds it */
    char models[200];
    snprintf(models, sizeof models, "\nm-\xc3\xa9 %064d\nx 1\n", 0);
    rnnd_store_take lacks = {1, models};
    ck_assert_int_eq(rnnd_store_acquire(b, ID1, 0, &lacks, &q, err, sizeof err), 0);
    ck_assert_int_eq(q.kind, RNND_STORE_ACQ_MODEL);
    ck_assert_str_eq(q.model, "m-\xc3\xa9");
    ck_assert_str_eq(q.digest, rnnd_model_digest(m));
    snprintf(models, sizeof models, "\nx 1\nm-\xc3\xa9 %s\n", rnnd_model_digest(m));
    ck_assert_int_eq(rnnd_store_acquire(b, ID1, 0, &lacks, &q, err, sizeof err), 0);
    ck_assert_int_eq(q.kind, RNND_STORE_ACQ_HELD);

    /* hand-over: a releases, b takes it at epoch 2 */
    ck_assert_int_eq(rnnd_store_release(a, ID1, 1, 60000, 0, err, sizeof err), 0);
    ck_assert_int_eq(rnnd_store_acquire(b, ID1, 0, NULL, &q, err, sizeof err), 0);
    ck_assert_int_eq(q.kind, RNND_STORE_ACQ_TAKEN);
    ck_assert_uint_eq(q.epoch, 2);
    rnnd_store_acq_free(&q);
    float st2[N_FLOATS];
    fill_state(st2);
    st2[4] = 42.0f;
    ck_assert_int_eq(write_step(b, 2, 11, st2, err, sizeof err), 0);

    /* a, stale (epoch 1), is refused by Redis and told the new holder */
    float old[N_FLOATS];
    fill_state(old);
    old[4] = -1.0f;
    ck_assert_int_eq(write_step(a, 1, 12, old, err, sizeof err), RNND_ERR_CONFLICT);
    ck_assert_ptr_nonnull(strstr(err, "fenced"));
    char bh[RNND_STORE_HOLDER_MAX + 1];
    rnnd_store_holder(b, bh);
    rnnd_store_wreq w = {.id = ID1, .epoch = 1, .ttl_ms = 60000, .release = 1};
    ck_assert_int_eq(rnnd_store_write(a, &w, err, sizeof err), RNND_ERR_CONFLICT);
    ck_assert_str_eq(w.holder, bh);
    /* b's epoch with a's name is refused too: the holder is checked, not only the epoch */
    ck_assert_int_eq(write_step(a, 2, 12, old, err, sizeof err), RNND_ERR_CONFLICT);
    rnnd_store_acq l;
    rnnd_store_rec d;
    rnnd_gen_params g;
    ck_assert_int_eq(rnnd_store_load(a, ID1, &l, err, sizeof err), 0);
    ck_assert_int_eq(rnnd_store_rec_decode(l.kv, l.n, m, &lim, &d, back, &g, err, sizeof err), 0);
    ck_assert_int_eq(memcmp(back, st2, sizeof st2), 0);
    ck_assert_uint_eq(d.steps, 11);
    ck_assert_str_eq(d.holder, bh);
    ck_assert_uint_eq(d.epoch, 2);
    rnnd_store_acq_free(&l);

    /* the same holder with a stale epoch: b releases, a takes it back at epoch 3; a write
     * that a queued at epoch 1 (before the moves) is refused, one at epoch 3 goes through */
    ck_assert_int_eq(rnnd_store_release(b, ID1, 2, 60000, 0, err, sizeof err), 0);
    ck_assert_int_eq(rnnd_store_acquire(a, ID1, 0, NULL, &q, err, sizeof err), 0);
    ck_assert_int_eq(q.kind, RNND_STORE_ACQ_TAKEN);
    ck_assert_uint_eq(q.epoch, 3);
    rnnd_store_acq_free(&q);
    ck_assert_int_eq(write_step(a, 1, 12, old, err, sizeof err), RNND_ERR_CONFLICT);
    ck_assert_int_eq(write_step(a, 3, 12, st2, err, sizeof err), 0);
    ck_assert_int_eq(rnnd_store_release(a, ID1, 3, 60000, 0, err, sizeof err), 0);
    ck_assert_int_eq(rnnd_store_acquire(b, ID1, d.seq + 3, NULL, &q, err, sizeof err), 0);
    ck_assert_int_eq(q.kind, RNND_STORE_ACQ_CURRENT);
    ck_assert_uint_eq(q.epoch, 4);

    /* the fence's own fields cannot be written by a caller */
    rnnd_store_fields forged = {.n = 1};
    forged.kv[0] = (rnnd_store_kv){"epoch", "99", 2};
    w = (rnnd_store_wreq){.id = ID1, .epoch = 4, .ttl_ms = 60000, .fields = &forged};
    ck_assert_int_eq(rnnd_store_write(b, &w, err, sizeof err), RNND_ERR_INVALID);
    forged.kv[0] = (rnnd_store_kv){"holder", "", 0};
    ck_assert_int_eq(rnnd_store_create(b, ID1, &forged, 60000, 0, err, sizeof err),
                     RNND_ERR_INVALID);

    /* the script cache flushed: NOSCRIPT, reloaded, the write goes through */
    freeReplyObject(raw("SCRIPT FLUSH", NULL));
    w = (rnnd_store_wreq){.id = ID1, .epoch = 4, .ttl_ms = 60000};
    ck_assert_msg(rnnd_store_write(b, &w, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(w.seq, d.seq + 4);
    /* a deleted record: the write says gone (1) */
    freeReplyObject(raw("DEL %s", "rnnd:{" ID1 "}:rec"));
    ck_assert_int_eq(write_step(b, 4, 12, st2, err, sizeof err), 1);
    ck_assert_int_eq(rnnd_store_delete(b, ID1, 4, err, sizeof err), 1);

    /* a fenced delete: a stale epoch and another holder are refused, the holder's goes through,
     * index entry included; a second store given a's incarnation writes as a */
    create(a, m, st);
    ck_assert_int_eq(rnnd_store_acquire(a, ID1, 0, NULL, &q, err, sizeof err), 0);
    ck_assert_uint_eq(q.epoch, 1);
    rnnd_store_acq_free(&q);
    ck_assert_int_eq(rnnd_store_delete(b, ID1, 1, err, sizeof err), RNND_ERR_CONFLICT);
    ck_assert_int_eq(rnnd_store_delete(a, ID1, 0, err, sizeof err), RNND_ERR_CONFLICT);
    rnnd_store_conf conf2 = {url, NULL, "a", 5000, 1000};
    rnnd_store *a2;
    ck_assert_int_eq(rnnd_store_open(&conf2, &a2, NULL, err, sizeof err), 0);
    ck_assert_int_eq(write_step(a2, 1, 13, st, err, sizeof err), RNND_ERR_CONFLICT);
    rnnd_store_set_incarnation(a2, rnnd_store_incarnation(a));
    ck_assert_msg(write_step(a2, 1, 13, st, err, sizeof err) == 0, "%s", err);
    redisReply *z = raw("ZSCORE rnnd:idx %s", ID1);
    ck_assert_int_eq(z->type, REDIS_REPLY_STRING);
    freeReplyObject(z);
    ck_assert_msg(rnnd_store_delete(a2, ID1, 1, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(rnnd_store_load(a, ID1, &l, err, sizeof err), 0);
    ck_assert_int_eq(l.kind, RNND_STORE_ACQ_MISSING);
    z = raw("ZSCORE rnnd:idx %s", ID1);
    ck_assert_int_eq(z->type, REDIS_REPLY_NIL);
    freeReplyObject(z);

    /* forget: only the record that names this node goes, with its tombstone and index entry */
    create(a, m, st);
    ck_assert_int_eq(rnnd_store_acquire(a, ID1, 0, NULL, &q, err, sizeof err), 0);
    rnnd_store_acq_free(&q);
    ck_assert_int_eq(rnnd_store_forget(b, ID1, "expired", 60000, err, sizeof err), 1);
    ck_assert_msg(rnnd_store_forget(a, ID1, "expired", 60000, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(rnnd_store_acquire(b, ID1, 0, NULL, &q, err, sizeof err), 0);
    ck_assert_int_eq(q.kind, RNND_STORE_ACQ_MISSING);
    ck_assert_str_eq(q.gone, "expired 8000000000000001");
    z = raw("ZSCORE rnnd:idx %s", ID1);
    ck_assert_int_eq(z->type, REDIS_REPLY_NIL);
    freeReplyObject(z);
    ck_assert_int_eq(rnnd_store_forget(a, ID1, "expired", 60000, err, sizeof err), 1);
    freeReplyObject(raw("DEL %s", "rnnd:{" ID1 "}:gone"));

    /* the data marker: set once, by the first; lost with Redis's data, and the incarnation
     * counter raised back to the node's own */
    char tok[RNND_STORE_TOKEN_MAX + 1];
    ck_assert_int_eq(rnnd_store_mark(a, "", tok, err, sizeof err), 0);
    ck_assert_str_eq(tok, "");
    ck_assert_int_eq(rnnd_store_mark(a, "t1", tok, err, sizeof err), 0);
    ck_assert_str_eq(tok, "t1");
    ck_assert_int_eq(rnnd_store_mark(b, "t2", tok, err, sizeof err), 0);
    ck_assert_str_eq(tok, "t1");
    freeReplyObject(raw("FLUSHALL", NULL));
    ck_assert_int_eq(rnnd_store_mark(b, "", tok, err, sizeof err), 0);
    ck_assert_str_eq(tok, "");
    ck_assert_int_eq(rnnd_store_mark(b, "t2", tok, err, sizeof err), 0);
    ck_assert_str_eq(tok, "t2");
    z = raw("GET rnnd:incarnation", NULL);
    ck_assert_int_eq(z->type, REDIS_REPLY_STRING);
    ck_assert_uint_eq(strtoull(z->str, NULL, 10), rnnd_store_incarnation(b));
    freeReplyObject(z);
    /* restore: a lost record written anew, held at the given epoch, indexed; never over one */
    rnnd_store_rec full;
    fill_rec(&full, m, st2);
    full.has_gen = 0;
    rnnd_store_fields ff;
    ck_assert_int_eq(rnnd_store_rec_encode(&full, NULL, RNND_STORE_ENC_ALL, &ff, err, sizeof err),
                     0);
    ck_assert_msg(rnnd_store_restore(a, ID1, 7, &ff, 60000, 0, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(rnnd_store_restore(a, ID1, 7, &ff, 60000, 0, err, sizeof err), 1);
    rnnd_store_fields_free(&ff);
    ck_assert_int_eq(rnnd_store_load(b, ID1, &l, err, sizeof err), 0);
    ck_assert_int_eq(rnnd_store_rec_decode(l.kv, l.n, m, &lim, &d, back, &g, err, sizeof err), 0);
    ck_assert_int_eq(memcmp(back, st2, sizeof st2), 0);
    ck_assert_str_eq(d.holder, ah);
    ck_assert_uint_eq(d.epoch, 7);
    ck_assert_uint_eq(d.seq, 1);
    rnnd_store_acq_free(&l);
    ck_assert_msg(write_step(a, 7, 20, st, err, sizeof err) == 0, "%s", err);
    z = raw("ZSCORE rnnd:idx %s", ID1);
    ck_assert_int_eq(z->type, REDIS_REPLY_STRING);
    freeReplyObject(z);
    rnnd_store_free(a2);
    rnnd_store_free(a);
    rnnd_store_free(b);
    rnnd_model_unref(m);
}
END_TEST

/* Fields of a step: STEPS and ST, into F (free it). */
static void step_fields(uint64_t steps, const float *st, rnnd_store_fields *f)
{
    rnnd_store_rec r = {.steps = steps, .state = st, .n_floats = N_FLOATS};
    snprintf(r.model, sizeof r.model, "m");
    memset(r.digest, 'a', 64);
    char err[256];
    ck_assert_int_eq(rnnd_store_rec_encode(&r, NULL, RNND_STORE_ENC_STEP, f, err, sizeof err), 0);
}

START_TEST(test_pipeline)
{
    redis_start(redis_port, NULL);
    rnnd_store *a = open_node("a", 5000, NULL), *b = open_node("b", 5000, NULL);
    rnnd_model *m = model(1);
    float st[N_FLOATS];
    fill_state(st);
    static const char *const ids[] = {"a0000000000000000000000000000000",
                                      "b0000000000000000000000000000000",
                                      "c0000000000000000000000000000000"};
    char err[256];
    rnnd_store_rec r;
    fill_rec(&r, m, st);
    r.has_gen = 0;
    rnnd_store_fields all;
    ck_assert_int_eq(rnnd_store_rec_encode(&r, NULL, RNND_STORE_ENC_ALL, &all, err, sizeof err), 0);
    rnnd_store_acq q;
    for (int k = 0; k < 3; k++) {
        ck_assert_int_eq(rnnd_store_create(a, ids[k], &all, 60000, 0, err, sizeof err), 0);
        ck_assert_int_eq(rnnd_store_acquire(k < 2 ? a : b, ids[k], 0, NULL, &q, err, sizeof err),
                         0);
        ck_assert_uint_eq(q.epoch, 1);
        rnnd_store_acq_free(&q);
    }
    rnnd_store_fields_free(&all);
    rnnd_store_fields f[4];
    for (int k = 0; k < 4; k++)
        step_fields(5 + (uint64_t)k, st, &f[k]);
    /* a's two sessions go through, b's is fenced (naming b), a missing one is gone, a bad id
     * refused: each on its own, in one pipeline */
    rnnd_store_wreq w[5] = {
        {.id = ids[0], .epoch = 1, .ttl_ms = 60000, .fields = &f[0]},
        {.id = ids[1], .epoch = 1, .ttl_ms = 60000, .fields = &f[1]},
        {.id = ids[2], .epoch = 1, .ttl_ms = 60000, .fields = &f[2]},
        {.id = "d0000000000000000000000000000000", .epoch = 1, .ttl_ms = 60000, .fields = &f[3]},
        {.id = "not-an-id", .epoch = 1, .ttl_ms = 60000, .fields = &f[3]},
    };
    ck_assert_msg(rnnd_store_write_many(a, w, 5, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(w[0].rc, 0);
    ck_assert_int_eq(w[1].rc, 0);
    ck_assert_uint_eq(w[0].seq, 2);
    ck_assert_int_eq(w[2].rc, RNND_ERR_CONFLICT);
    char bh[RNND_STORE_HOLDER_MAX + 1];
    rnnd_store_holder(b, bh);
    ck_assert_str_eq(w[2].holder, bh);
    ck_assert_int_eq(w[3].rc, 1);
    ck_assert_int_eq(w[4].rc, RNND_ERR_INVALID);
    redisReply *x = raw("HGET rnnd:{%s}:rec steps", ids[1]);
    ck_assert_str_eq(x->str, "6");
    freeReplyObject(x);
    x = raw("HGET rnnd:{%s}:rec steps", ids[2]);
    char created_steps[24];
    snprintf(created_steps, sizeof created_steps, "%" PRIu64, r.steps);
    ck_assert_str_eq(x->str, created_steps); /* the fenced write changed nothing */
    freeReplyObject(x);

    /* the script cache flushed: each NOSCRIPT is sent again and goes through */
    freeReplyObject(raw("SCRIPT FLUSH", NULL));
    ck_assert_msg(rnnd_store_write_many(a, w, 2, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(w[0].rc, 0);
    ck_assert_int_eq(w[1].rc, 0);
    ck_assert_uint_eq(w[1].seq, 3);

    /* Redis gone: the pipeline fails, and every write says so */
    redis_kill();
    ck_assert_int_eq(rnnd_store_write_many(a, w, 3, err, sizeof err), RNND_ERR_IO);
    for (int k = 0; k < 3; k++)
        ck_assert_int_eq(w[k].rc, RNND_ERR_IO);
    for (int k = 0; k < 4; k++)
        rnnd_store_fields_free(&f[k]);
    rnnd_store_free(a);
    rnnd_store_free(b);
    rnnd_model_unref(m);
}
END_TEST

START_TEST(test_lease)
{
    redis_start(redis_port, NULL);
    const int64_t lease = 600;
    rnnd_store *a = open_node("a", lease, NULL), *b = open_node("b", lease, NULL);
    rnnd_model *m = model(1);
    float st[N_FLOATS];
    fill_state(st);
    create(a, m, st);
    char err[256];
    rnnd_store_acq q;
    ck_assert_int_eq(rnnd_store_acquire(a, ID1, 0, NULL, &q, err, sizeof err), 0);
    rnnd_store_acq_free(&q);
    ck_assert_double_gt(rnnd_store_lease_until(a), rnnd_mono_s());

    /* renewed every lease/4 for two leases: a stays the live holder */
    for (int i = 0; i < 8; i++) {
        sleep_ms(lease / 4);
        ck_assert_msg(rnnd_store_renew(a, err, sizeof err) == 0, "%s", err);
        ck_assert_msg(rnnd_store_renew(b, err, sizeof err) == 0, "%s", err);
    }
    ck_assert_int_eq(rnnd_store_acquire(b, ID1, 0, NULL, &q, err, sizeof err), 0);
    ck_assert_int_eq(q.kind, RNND_STORE_ACQ_HELD);

    /* a stops renewing (paused, dead): after its lease b takes the session from a dead node */
    for (int i = 0; i < 6; i++) {
        sleep_ms(lease / 4);
        ck_assert_msg(rnnd_store_renew(b, err, sizeof err) == 0, "%s", err);
    }
    /* unless b cannot tell (Redis just came back): a missing lease then counts as live */
    rnnd_store_take unsure = {0, NULL};
    ck_assert_int_eq(rnnd_store_acquire(b, ID1, 0, &unsure, &q, err, sizeof err), 0);
    ck_assert_int_eq(q.kind, RNND_STORE_ACQ_HELD);
    ck_assert_int_eq(rnnd_store_acquire(b, ID1, 0, NULL, &q, err, sizeof err), 0);
    ck_assert_int_eq(q.kind, RNND_STORE_ACQ_TAKEN);
    ck_assert_int_eq(q.from_dead, 1);
    ck_assert_uint_eq(q.epoch, 2);
    rnnd_store_acq_free(&q);
    /* a wakes: its writes are fenced, its renewal reports the lapse, and it cannot acquire
     * until it registered again */
    ck_assert_int_eq(write_step(a, 1, 50, st, err, sizeof err), RNND_ERR_CONFLICT);
    ck_assert_int_eq(rnnd_store_renew(a, err, sizeof err), RNND_ERR_CONFLICT);
    ck_assert_ptr_nonnull(strstr(err, "lapsed"));
    ck_assert_int_eq(rnnd_store_acquire(a, ID1, 0, NULL, &q, err, sizeof err), RNND_ERR_CONFLICT);
    uint64_t inc = rnnd_store_incarnation(a);
    ck_assert_int_eq(rnnd_store_reregister(a, err, sizeof err), 0);
    ck_assert_uint_eq(rnnd_store_incarnation(a), inc);
    ck_assert_int_eq(rnnd_store_acquire(a, ID1, 0, NULL, &q, err, sizeof err), 0);
    ck_assert_int_eq(q.kind, RNND_STORE_ACQ_HELD); /* b is live */

    /* a second incarnation of a live name waits, then gives up */
    rnnd_store_conf conf = {url, NULL, "b", lease, 1000};
    rnnd_store *b2;
    ck_assert_int_eq(rnnd_store_open(&conf, &b2, NULL, err, sizeof err), 0);
    double t0 = rnnd_mono_s();
    ck_assert_int_eq(rnnd_store_register(b2, 100, err, sizeof err), RNND_ERR_BUSY);
    ck_assert_double_ge(rnnd_mono_s() - t0, 0.1);
    ck_assert_uint_gt(rnnd_store_incarnation(b2), rnnd_store_incarnation(b));
    /* once b drops its lease, the new incarnation gets the name */
    ck_assert_int_eq(rnnd_store_release_node(b, err, sizeof err), 0);
    ck_assert_int_eq(rnnd_store_register(b2, 1000, err, sizeof err), 0);
    ck_assert_int_eq(rnnd_store_renew(b, err, sizeof err), RNND_ERR_CONFLICT);
    rnnd_store_free(b2);
    rnnd_store_free(a);
    rnnd_store_free(b);
    rnnd_model_unref(m);
}
END_TEST

/* ---- threads ------------------------------------------------------------------------------ */

#define THREADS 4
#define WRITES 50

struct writer {
    rnnd_store *s;
    uint64_t epoch;
    int failed;
};

static void *writer_run(void *arg)
{
    struct writer *w = arg;
    float st[N_FLOATS];
    fill_state(st);
    char err[256];
    for (int i = 0; i < WRITES; i++)
        if (write_step(w->s, w->epoch, (uint64_t)i, st, err, sizeof err))
            w->failed++;
    return NULL;
}

START_TEST(test_threads)
{
    /* one store shared by threads: its mutex serializes them on the one hiredis context */
    redis_start(redis_port, NULL);
    rnnd_store *s = open_node("a", 5000, NULL);
    rnnd_model *m = model(1);
    float st[N_FLOATS];
    fill_state(st);
    create(s, m, st);
    char err[256];
    rnnd_store_acq q;
    ck_assert_int_eq(rnnd_store_acquire(s, ID1, 0, NULL, &q, err, sizeof err), 0);
    uint64_t epoch = q.epoch;
    rnnd_store_acq_free(&q);
    pthread_t t[THREADS];
    struct writer w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct writer){s, epoch, 0};
        ck_assert_int_eq(pthread_create(&t[i], NULL, writer_run, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        ck_assert_int_eq(w[i].failed, 0);
    }
    rnnd_store_wreq last = {.id = ID1, .epoch = epoch, .ttl_ms = 60000};
    ck_assert_int_eq(rnnd_store_write(s, &last, err, sizeof err), 0);
    ck_assert_uint_eq(last.seq, 1 + THREADS * WRITES + 1); /* created at 1, every write counted */
    rnnd_store_free(s);
    rnnd_model_unref(m);
}
END_TEST

/* ---- AUTH and the password file ------------------------------------------------------------- */

static void write_file(const char *path, const char *text, mode_t mode)
{
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    ck_assert_int_eq(chmod(path, mode), 0);
}

static void pw_refused(const char *path, int rc, const char *msg)
{
    char pw[600], err[512] = "";
    ck_assert_int_eq(rnnd_store_password_read(path, pw, sizeof pw, err, sizeof err), rc);
    ck_assert_msg(strstr(err, msg) && !strncmp(err, path, strlen(path)),
                  "got \"%s\", want \"%s: ...%s\"", err, path, msg);
    ck_assert_ptr_null(strstr(err, "hunter2"));
}

START_TEST(test_auth)
{
    redis_start(redis_port, "hunter2-pw");
    char pwfile[600], link[600], fifo[600], err[512];
    snprintf(pwfile, sizeof pwfile, "%s/pw", dir);
    snprintf(link, sizeof link, "%s/pw-link", dir);
    snprintf(fifo, sizeof fifo, "%s/pw-fifo", dir);

    /* the file's first line (a trailing CR LF dropped) gets in; 0440 is accepted */
    write_file(pwfile, "hunter2-pw\r\nsecond line\n", 0440);
    rnnd_store *s = open_node("a", 5000, pwfile);
    rnnd_model *m = model(1);
    float st[N_FLOATS];
    fill_state(st);
    create(s, m, st);
    rnnd_store_free(s);

    /* AUTH USER PASSWORD when the URL names a user (Redis 6 ACLs: "default" is requirepass's) */
    snprintf(url, sizeof url, "redis://default@127.0.0.1:%d/0", redis_port);
    rnnd_store_conf uconf = {url, pwfile, "a", 5000, 1000};
    int uup = 0;
    ck_assert_int_eq(rnnd_store_open(&uconf, &s, &uup, err, sizeof err), 0);
    ck_assert_msg(uup, "%s", err);
    rnnd_store_free(s);
    snprintf(url, sizeof url, "redis://nobody@127.0.0.1:%d/0", redis_port);
    ck_assert_int_eq(rnnd_store_open(&uconf, &s, &uup, err, sizeof err), 0);
    ck_assert_int_eq(uup, 0);
    ck_assert_msg(strstr(err, "WRONGPASS"), "%s", err);
    rnnd_store_free(s);

    /* a wrong password, and none */
    write_file(pwfile, "hunter2-wrong\n", 0600);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", redis_port);
    rnnd_store_conf conf = {url, pwfile, "a", 5000, 1000};
    int up = 1;
    ck_assert_int_eq(rnnd_store_open(&conf, &s, &up, err, sizeof err), 0);
    ck_assert_int_eq(up, 0);
    ck_assert_msg(strstr(err, "AUTH") && strstr(err, "127.0.0.1"), "%s", err);
    ck_assert_ptr_null(strstr(err, "hunter2"));
    ck_assert_int_eq(rnnd_store_register(s, 0, err, sizeof err), RNND_ERR_IO);
    rnnd_store_free(s);
    conf.password_file = "";
    ck_assert_int_eq(rnnd_store_open(&conf, &s, &up, err, sizeof err), 0);
    ck_assert_int_eq(up, 0);
    ck_assert_msg(strstr(err, "NOAUTH"), "%s", err);
    rnnd_store_free(s);

    /* the file's checks */
    write_file(pwfile, "hunter2-pw\n", 0644);
    pw_refused(pwfile, RNND_ERR_INVALID, "others may access it (mode 0644)");
    write_file(pwfile, "hunter2-pw\n", 0604);
    pw_refused(pwfile, RNND_ERR_INVALID, "others may access it");
    write_file(pwfile, "hunter2-pw\n", 0660);
    pw_refused(pwfile, RNND_ERR_INVALID, "the group may write it");
    write_file(pwfile, "\nhunter2-pw\n", 0600);
    pw_refused(pwfile, RNND_ERR_INVALID, "the first line must hold the password");
    write_file(pwfile, "", 0600);
    pw_refused(pwfile, RNND_ERR_INVALID, "the first line must hold the password");
    write_file(pwfile, "hunter2-pw\n", 0600);
    unlink(link);
    ck_assert_int_eq(symlink(pwfile, link), 0);
    pw_refused(link, RNND_ERR_INVALID, "a symbolic link");
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    pw_refused(fifo, RNND_ERR_INVALID, "not a regular file");
    pw_refused(dir, RNND_ERR_INVALID, "not a regular file");
    char missing[600];
    snprintf(missing, sizeof missing, "%s/none", dir);
    pw_refused(missing, RNND_ERR_IO, "No such file");
    /* another user's file (root can make one; root's own is accepted) */
    if (geteuid() == 0) {
        ck_assert_int_eq(chown(pwfile, 12345, 12345), 0);
        pw_refused(pwfile, RNND_ERR_INVALID, "owned by uid 12345");
    }
    /* the open refuses a bad file before connecting */
    conf.password_file = link;
    ck_assert_int_eq(rnnd_store_open(&conf, &s, &up, err, sizeof err), RNND_ERR_INVALID);
    ck_assert_ptr_null(s);
    rnnd_model_unref(m);
}
END_TEST

START_TEST(test_select)
{
    redis_start(redis_port, NULL);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/3", redis_port);
    rnnd_store_conf conf = {url, NULL, "a", 5000, 1000};
    rnnd_store *s;
    int up = 0;
    char err[256];
    ck_assert_int_eq(rnnd_store_open(&conf, &s, &up, err, sizeof err), 0);
    ck_assert_int_eq(up, 1);
    ck_assert_int_eq(rnnd_store_register(s, 0, err, sizeof err), 0);
    rnnd_model *m = model(1);
    float st[N_FLOATS];
    fill_state(st);
    create(s, m, st);
    redisReply *r = raw("EXISTS %s", "rnnd:{" ID1 "}:rec"); /* database 0 */
    ck_assert_int_eq(r->integer, 0);
    freeReplyObject(r);
    redisContext *c = redisConnect("127.0.0.1", redis_port);
    freeReplyObject(redisCommand(c, "SELECT 3"));
    r = redisCommand(c, "EXISTS %s", "rnnd:{" ID1 "}:rec");
    ck_assert_int_eq(r->integer, 1);
    freeReplyObject(r);
    redisFree(c);
    rnnd_store_free(s);
    rnnd_model_unref(m);
}
END_TEST

/* ---- Redis down ------------------------------------------------------------------------------ */

START_TEST(test_down)
{
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", redis_port);
    rnnd_store_conf conf = {url, NULL, "a", 5000, 500};
    rnnd_store *s;
    int up = 1;
    char err[256] = "", where[64];
    snprintf(where, sizeof where, "store 127.0.0.1:%d: ", redis_port);
    ck_assert_int_eq(rnnd_store_open(&conf, &s, &up, err, sizeof err), 0);
    ck_assert_int_eq(up, 0);
    ck_assert_msg(strstr(err, where) && strstr(err, "refused"), "%s", err);
    /* what a client is told: the reason without the address; other messages whole */
    ck_assert_msg(!strncmp(err, where, strlen(where)), "%s", err);
    ck_assert_str_eq(rnnd_store_reason(err), err + strlen(where));
    ck_assert_str_eq(rnnd_store_reason("store: the session id exists"),
                     "store: the session id exists");
    ck_assert_int_eq(rnnd_store_register(s, 0, err, sizeof err), RNND_ERR_IO);
    ck_assert_msg(strstr(err, where), "%s", err);
    rnnd_store_acq q;
    ck_assert_int_eq(rnnd_store_acquire(s, ID1, 0, NULL, &q, err, sizeof err), RNND_ERR_IO);
    ck_assert_int_eq(rnnd_store_renew(s, err, sizeof err), RNND_ERR_IO);

    /* Redis comes: the next call connects */
    redis_start(redis_port, NULL);
    ck_assert_msg(rnnd_store_register(s, 0, err, sizeof err) == 0, "%s", err);
    rnnd_model *m = model(1);
    float st[N_FLOATS];
    fill_state(st);
    create(s, m, st);
    ck_assert_int_eq(rnnd_store_acquire(s, ID1, 0, NULL, &q, err, sizeof err), 0);
    rnnd_store_acq_free(&q);

    /* Redis dies mid-use: clean errors, then back again */
    redis_kill();
    ck_assert_int_eq(write_step(s, 1, 5, st, err, sizeof err), RNND_ERR_IO);
    ck_assert_msg(strstr(err, where), "%s", err);
    ck_assert_int_eq(write_step(s, 1, 5, st, err, sizeof err), RNND_ERR_IO);
    ck_assert_int_eq(rnnd_store_load(s, ID1, &q, err, sizeof err), RNND_ERR_IO);
    rnnd_store_free(s);
    rnnd_model_unref(m);
}
END_TEST

/* ---- the hand-over channel ----------------------------------------------------------------- */

START_TEST(test_handover_channel)
{
    redis_start(redis_port, NULL);
    rnnd_store *b = open_node("b", 5000, NULL);
    rnnd_store_conf conf = {url, NULL, "a", 5000, 1000};
    rnnd_store *sub;
    int up = 0;
    char err[256] = "", id[RNND_STORE_ID_LEN + 1], from[RNND_STORE_NAME_MAX + 1];
    ck_assert_int_eq(rnnd_store_open(&conf, &sub, &up, err, sizeof err), 0);
    long long n = -1;
    /* nobody listens yet: the asker learns it */
    ck_assert_int_eq(rnnd_store_handover_ask(b, "a 1", ID1, &n, err, sizeof err), 0);
    ck_assert_int_eq(n, 0);
    /* the first read subscribes; nothing has come */
    ck_assert_int_eq(rnnd_store_handover_next(sub, 50, id, from, err, sizeof err), 1);
    ck_assert_int_eq(rnnd_store_handover_ask(b, "a 1", ID1, &n, err, sizeof err), 0);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(rnnd_store_handover_next(sub, 2000, id, from, err, sizeof err), 0);
    ck_assert_str_eq(id, ID1);
    ck_assert_str_eq(from, "b");
    /* two requests, both delivered, in order */
    ck_assert_int_eq(rnnd_store_handover_ask(b, "a", ID2, &n, err, sizeof err), 0);
    ck_assert_int_eq(rnnd_store_handover_ask(b, "a 7", ID1, &n, err, sizeof err), 0);
    ck_assert_int_eq(rnnd_store_handover_next(sub, 2000, id, from, err, sizeof err), 0);
    ck_assert_str_eq(id, ID2);
    ck_assert_int_eq(rnnd_store_handover_next(sub, 2000, id, from, err, sizeof err), 0);
    ck_assert_str_eq(id, ID1);
    /* a malformed message is skipped; a bad id or holder is refused before it is sent */
    freeReplyObject(raw("PUBLISH rnnd:handover:a %s", "not-an-id b"));
    ck_assert_int_eq(rnnd_store_handover_next(sub, 2000, id, from, err, sizeof err), 1);
    ck_assert_int_eq(rnnd_store_handover_ask(b, "a 1", "0123", &n, err, sizeof err),
                     RNND_ERR_INVALID);
    ck_assert_int_eq(rnnd_store_handover_ask(b, " 1", ID1, &n, err, sizeof err), RNND_ERR_INVALID);
    /* Redis restarts: the listener reports it, then subscribes again */
    redis_kill();
    ck_assert_int_eq(rnnd_store_handover_next(sub, 2000, id, from, err, sizeof err), RNND_ERR_IO);
    redis_start(redis_port, NULL);
    ck_assert_int_eq(rnnd_store_handover_next(sub, 50, id, from, err, sizeof err), 1);
    /* the asker's old connection fails once (dropped), the next call connects */
    if (rnnd_store_handover_ask(b, "a 1", ID2, &n, err, sizeof err) == RNND_ERR_IO)
        ck_assert_msg(rnnd_store_handover_ask(b, "a 1", ID2, &n, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(rnnd_store_handover_next(sub, 2000, id, from, err, sizeof err), 0);
    ck_assert_str_eq(id, ID2);
    rnnd_store_free(sub);
    rnnd_store_free(b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("store");
    TCase *codec = tcase_create("codec");
    tcase_add_test(codec, test_url);
    tcase_add_test(codec, test_record_roundtrip);
    tcase_add_test(codec, test_record_refused);
    suite_add_tcase(s, codec);
    TCase *redis = tcase_create("redis");
    tcase_add_checked_fixture(redis, setup, teardown);
    tcase_set_timeout(redis, 60);
    tcase_add_test(redis, test_acquire);
    tcase_add_test(redis, test_fence);
    tcase_add_test(redis, test_pipeline);
    tcase_add_test(redis, test_lease);
    tcase_add_test(redis, test_threads);
    tcase_add_test(redis, test_auth);
    tcase_add_test(redis, test_select);
    tcase_add_test(redis, test_down);
    tcase_add_test(redis, test_handover_channel);
    suite_add_tcase(s, redis);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
