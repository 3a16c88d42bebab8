/* The sessions snapshot file (see snapshot.h; format in docs/state.md). Integers and floats
 * are written in the host's byte order, which the header's marker checks: a snapshot is for
 * restarting the daemon on the same machine, not for moving state between machines (the
 * JSON state export is for that). */
#include "snapshot.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rnnd/status.h"
#include "sha256.h"
#include "snapkey.h"

static const char head_magic[8] = {'R', 'N', 'N', 'D', 'S', 'N', 'A', 'P'};
static const char tail_magic[8] = {'R', 'N', 'N', 'D', 'E', 'N', 'D', '1'};
#define VERSION \
    4u                         /* 2: records carry their owner; 3: the model's state digest;
                             * 4: an HMAC-SHA256 trailer with the snapshot key */
#define FILE_DIGEST_VERSION 2u /* the oldest read: its records carry the model file's SHA-256 */
#define SIGNED_VERSION 4u      /* the first with the HMAC trailer */
#define ENDIAN 0x01020304u
#define HEAD_BYTES 24
#define TAIL_BYTES 48 /* magic, count, sha256 (then, from version 4, the HMAC) */

#define TMP_PREFIX RNND_SNAPSHOT_FILE ".tmp-"
#define TMP_TRIES 16

struct rnnd_snap_writer {
    char *dir;
    int dfd;                          /* state_dir: every name below is opened relative to it */
    int made;                         /* TMP is ours to remove */
    char tmp[sizeof TMP_PREFIX + 16]; /* TMP_PREFIX + 16 random hex digits */
    FILE *f;
    rnnd_sha256 sha;
    rnnd_hmac mac;
    size_t off, count;
    int failed;
};

static int wr(rnnd_snap_writer *w, const void *p, size_t n)
{
    if (w->failed)
        return -1;
    if (n && fwrite(p, 1, n, w->f) != n) {
        w->failed = errno ? errno : EIO;
        return -1;
    }
    rnnd_sha256_update(&w->sha, p, n);
    rnnd_hmac_update(&w->mac, p, n);
    w->off += n;
    return 0;
}

static char *path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

void rnnd_snap_writer_abort(rnnd_snap_writer *w)
{
    if (!w)
        return;
    if (w->f)
        fclose(w->f);
    if (w->made)
        unlinkat(w->dfd, w->tmp, 0);
    if (w->dfd >= 0)
        close(w->dfd);
    free(w->dir);
    memset(w, 0, sizeof *w); /* the HMAC state holds the key */
    free(w);
}

int rnnd_snap_remove_stale(const char *dir, size_t *removed, char *err, size_t errlen)
{
    *removed = 0;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (!d) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        if (dfd >= 0)
            close(dfd);
        return RNND_ERR_IO;
    }
    size_t plen = strlen(TMP_PREFIX);
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *n = e->d_name;
        if (strncmp(n, TMP_PREFIX, plen) || strlen(n) != plen + 16 ||
            strspn(n + plen, "0123456789abcdef") != 16)
            continue;
        /* unlinkat without AT_REMOVEDIR: a file or a link goes (never followed), a folder
         * planted under such a name stays, and is harmless: the next name is random */
        if (unlinkat(dfd, n, 0) == 0)
            (*removed)++;
    }
    closedir(d);
    return RNND_OK;
}

int rnnd_snap_writer_open(const char *dir, const unsigned char *key, int64_t serial,
                          rnnd_snap_writer **out, char *err, size_t errlen)
{
    *out = NULL;
    rnnd_snap_writer *w = calloc(1, sizeof *w);
    if (w)
        w->dfd = -1;
    if (!w || !(w->dir = strdup(dir))) {
        rnnd_snap_writer_abort(w);
        snprintf(err, errlen, "%s: out of memory", dir);
        return RNND_ERR_NOMEM;
    }
    /* A fresh unpredictable name, created exclusively without following links: nothing
     * someone else put in state_dir is written through, blocks the snapshot, or has to be
     * removable (a folder at a fixed name once made every snapshot fail). */
    w->dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int fd = -1;
    snprintf(w->tmp, sizeof w->tmp, "%s", TMP_PREFIX);
    for (int i = 0; w->dfd >= 0 && fd < 0 && i < TMP_TRIES; i++) {
        uint64_t r;
        if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
            break;
        snprintf(w->tmp, sizeof w->tmp, "%s%016llx", TMP_PREFIX, (unsigned long long)r);
        fd = openat(w->dfd, w->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd >= 0)
        w->made = 1;
    if (fd < 0 || !(w->f = fdopen(fd, "wb"))) {
        snprintf(err, errlen, "%s/%s: %s", dir, w->tmp, strerror(errno));
        if (fd >= 0 && !w->f)
            close(fd);
        rnnd_snap_writer_abort(w);
        return RNND_ERR_IO;
    }
    rnnd_sha256_init(&w->sha);
    rnnd_hmac_init(&w->mac, key, RNND_SNAPKEY_BYTES);
    uint32_t version = VERSION, endian = ENDIAN;
    wr(w, head_magic, 8);
    wr(w, &version, 4);
    wr(w, &endian, 4);
    wr(w, &serial, 8);
    *out = w;
    return RNND_OK;
}

/* The size of REC's payload (after its length word), with the padding that puts the floats at
 * a multiple of 4 when the payload starts at file offset OFF + 4. */
static size_t payload_size(const rnnd_snap_rec *r, size_t off, size_t *pad)
{
    size_t n = 32 + 1 + strlen(r->model) + 64 + 8 + 8 + 8 + 8 + 8 + 1;
    if (r->has_gen) {
        n += 8 + 8 + 4 + 8 + 1 + 8 + 1;
        for (size_t i = 0; i < r->gen.n_stop; i++)
            n += 1 + strlen(r->gen.stop[i]);
    }
    n += 8;
    *pad = (4 - (off + 4 + n) % 4) % 4;
    return n + *pad + r->n_floats * sizeof(float);
}

int rnnd_snap_writer_add(rnnd_snap_writer *w, const rnnd_snap_rec *r)
{
    size_t pad, len = payload_size(r, w->off, &pad);
    size_t name_len = strlen(r->model);
    if (len > UINT32_MAX || name_len > 255 || strlen(r->id) != 32 || strlen(r->digest) != 64) {
        w->failed = EINVAL;
        return RNND_ERR_IO;
    }
    uint32_t len32 = (uint32_t)len;
    uint8_t nl = (uint8_t)name_len, has_gen = r->has_gen ? 1 : 0;
    uint64_t nf = r->n_floats;
    static const char zeros[4] = {0};
    wr(w, &len32, 4);
    wr(w, r->id, 32);
    wr(w, &nl, 1);
    wr(w, r->model, name_len);
    wr(w, r->digest, 64);
    wr(w, &r->owner, 8);
    wr(w, &r->steps, 8);
    wr(w, &r->created, 8);
    wr(w, &r->ttl_s, 8);
    wr(w, &r->idle_s, 8);
    wr(w, &has_gen, 1);
    if (r->has_gen) {
        uint8_t has_seed = r->gen.has_seed ? 1 : 0, n_stop = (uint8_t)r->gen.n_stop;
        wr(w, &r->gen.max_tokens, 8);
        wr(w, &r->gen.sampling.temperature, 8);
        wr(w, &r->gen.sampling.top_k, 4);
        wr(w, &r->gen.sampling.top_p, 8);
        wr(w, &has_seed, 1);
        wr(w, &r->gen.seed, 8);
        wr(w, &n_stop, 1);
        for (size_t i = 0; i < r->gen.n_stop; i++) {
            uint8_t sl = (uint8_t)strlen(r->gen.stop[i]);
            wr(w, &sl, 1);
            wr(w, r->gen.stop[i], sl);
        }
    }
    wr(w, &nf, 8);
    wr(w, zeros, pad);
    wr(w, r->state, r->n_floats * sizeof(float));
    if (w->failed)
        return RNND_ERR_IO;
    w->count++;
    return RNND_OK;
}

int rnnd_snap_writer_commit(rnnd_snap_writer *w, size_t *records, size_t *bytes, char *err,
                            size_t errlen)
{
    uint64_t count = w->count;
    wr(w, tail_magic, 8);
    wr(w, &count, 8);
    unsigned char hash[32], mac[RNND_HMAC_BYTES];
    rnnd_sha256_final(&w->sha, hash);
    wr(w, hash, 32);
    rnnd_hmac_final(&w->mac, mac);
    if (!w->failed && fwrite(mac, 1, sizeof mac, w->f) != sizeof mac)
        w->failed = errno ? errno : EIO;
    size_t size = w->off + sizeof mac;
    if (!w->failed && (fflush(w->f) || fsync(fileno(w->f))))
        w->failed = errno ? errno : EIO;
    if (!w->failed) {
        int rc = fclose(w->f);
        w->f = NULL;
        if (rc)
            w->failed = errno ? errno : EIO;
    }
    /* a link at the final name is replaced itself, never followed */
    if (!w->failed && renameat(w->dfd, w->tmp, w->dfd, RNND_SNAPSHOT_FILE)) {
        w->failed = errno ? errno : EIO;
        snprintf(err, errlen, "%s/%s: rename to %s: %s", w->dir, w->tmp, RNND_SNAPSHOT_FILE,
                 strerror(w->failed));
        rnnd_snap_writer_abort(w);
        return RNND_ERR_IO;
    }
    if (w->failed) {
        snprintf(err, errlen, "%s/%s: %s", w->dir, w->tmp, strerror(w->failed));
        rnnd_snap_writer_abort(w);
        return RNND_ERR_IO;
    }
    w->made = 0;
    fsync(w->dfd); /* the rename is durable once the folder is */
    rnnd_snap_writer_abort(w);
    if (records)
        *records = count;
    if (bytes)
        *bytes = size;
    return RNND_OK;
}

/* ---- reading ----------------------------------------------------------------------------- */

struct rnnd_snap {
    unsigned char *map; /* the whole file, read into memory (malloc) */
    size_t size;
    uint32_t version;
    size_t n;
    size_t *offs; /* each record's payload offset */
};

void rnnd_snap_free(rnnd_snap *s)
{
    if (!s)
        return;
    free(s->map);
    free(s->offs);
    free(s);
}

size_t rnnd_snap_count(const rnnd_snap *s) { return s->n; }
size_t rnnd_snap_bytes(const rnnd_snap *s) { return s->size; }
unsigned rnnd_snap_version(const rnnd_snap *s) { return s->version; }

int64_t rnnd_snap_serial(const rnnd_snap *s)
{
    int64_t serial;
    memcpy(&serial, s->map + 16, 8);
    return serial;
}

/* A bounds-checked reader over [p, end). */
struct cur {
    const unsigned char *p, *end;
    int bad;
};

static const unsigned char *take(struct cur *c, size_t n)
{
    if (c->bad || (size_t)(c->end - c->p) < n) {
        c->bad = 1;
        return NULL;
    }
    const unsigned char *at = c->p;
    c->p += n;
    return at;
}

static void get(struct cur *c, void *out, size_t n)
{
    const unsigned char *at = take(c, n);
    if (at)
        memcpy(out, at, n);
    else
        memset(out, 0, n);
}

static int hex_ok(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return 0;
    return 1;
}

/* Parse the payload at C into REC. Returns 0 or -1. */
static int parse_rec(struct cur *c, rnnd_snap_rec *r)
{
    memset(r, 0, sizeof *r);
    char *id = r->id, *model = r->model, *digest = r->digest;
    const unsigned char *p = take(c, 32);
    if (!p || !hex_ok(p, 32))
        return -1;
    memcpy(id, p, 32);
    id[32] = '\0';
    uint8_t nl = 0;
    get(c, &nl, 1);
    if (!(p = take(c, nl)) || !nl || memchr(p, 0, nl))
        return -1;
    memcpy(model, p, nl);
    model[nl] = '\0';
    if (!(p = take(c, 64)) || !hex_ok(p, 64))
        return -1;
    memcpy(digest, p, 64);
    digest[64] = '\0';
    get(c, &r->owner, 8);
    get(c, &r->steps, 8);
    get(c, &r->created, 8);
    get(c, &r->ttl_s, 8);
    get(c, &r->idle_s, 8);
    uint8_t has_gen = 0;
    get(c, &has_gen, 1);
    if (has_gen > 1)
        return -1;
    r->has_gen = has_gen;
    if (has_gen) {
        uint8_t has_seed = 0, n_stop = 0;
        get(c, &r->gen.max_tokens, 8);
        get(c, &r->gen.sampling.temperature, 8);
        get(c, &r->gen.sampling.top_k, 4);
        get(c, &r->gen.sampling.top_p, 8);
        get(c, &has_seed, 1);
        get(c, &r->gen.seed, 8);
        get(c, &n_stop, 1);
        if (has_seed > 1 || n_stop > RNND_GEN_MAX_STOP)
            return -1;
        r->gen.has_seed = has_seed;
        r->gen.n_stop = n_stop;
        for (size_t i = 0; i < n_stop; i++) {
            uint8_t sl = 0;
            get(c, &sl, 1);
            if (!sl || sl > RNND_GEN_STOP_BYTES || !(p = take(c, sl)))
                return -1;
            memcpy(r->gen.stop[i], p, sl);
            r->gen.stop[i][sl] = '\0';
        }
    }
    uint64_t nf = 0;
    get(c, &nf, 8);
    if (c->bad)
        return -1;
    size_t pad = (size_t)(c->end - c->p);
    if (nf > pad / sizeof(float))
        return -1;
    pad -= (size_t)nf * sizeof(float);
    if (pad > 3 || !take(c, pad))
        return -1;
    r->state = (const float *)(const void *)c->p;
    r->n_floats = (size_t)nf;
    c->p = c->end;
    return c->bad ? -1 : 0;
}

/* the most bytes one record can take: its length word, the fixed fields with the longest
 * model name, generation defaults with every stop string, padding; the state not counted */
#define REC_MAX_BYTES \
    (4 + 32 + 1 + 255 + 64 + 5 * 8 + 1 + (8 + 8 + 4 + 8 + 1 + 8 + 1) + \
     RNND_GEN_MAX_STOP * (1 + RNND_GEN_STOP_BYTES) + 8 + 3)

size_t rnnd_snap_max_bytes(size_t max_sessions, size_t max_state_bytes)
{
    size_t fixed = HEAD_BYTES + TAIL_BYTES + RNND_HMAC_BYTES;
    if (max_sessions > (SIZE_MAX - fixed) / REC_MAX_BYTES)
        return SIZE_MAX;
    size_t n = fixed + max_sessions * REC_MAX_BYTES;
    return max_state_bytes > SIZE_MAX - n ? SIZE_MAX : n + max_state_bytes;
}

int rnnd_snap_load(const char *dir, const unsigned char *key, int accept_unsigned, size_t max_bytes,
                   rnnd_snap **out, const char **reason, char *err, size_t errlen)
{
    *out = NULL;
    *reason = NULL;
    char *path = path_join(dir, RNND_SNAPSHOT_FILE);
    if (!path) {
        snprintf(err, errlen, "%s: out of memory", dir);
        return RNND_ERR_NOMEM;
    }
    /* No link is followed and nothing but a regular file is read: a FIFO put there would
     * block the start (O_NONBLOCK: the open returns at once, fstat then refuses it). */
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        free(path);
        if (e == ELOOP) {
            snprintf(err, errlen, "%s/%s: a symbolic link; the snapshot must be a regular file",
                     dir, RNND_SNAPSHOT_FILE);
            *reason = "symlink";
            return RNND_ERR_INVALID;
        }
        snprintf(err, errlen, "%s/%s: %s", dir, RNND_SNAPSHOT_FILE, strerror(e));
        return e == ENOENT ? 1 : RNND_ERR_IO;
    }
    struct stat st;
    rnnd_snap *s = calloc(1, sizeof *s);
    int rc = RNND_ERR_INVALID;
    if (!s || fstat(fd, &st)) {
        snprintf(err, errlen, "%s: %s", path, s ? strerror(errno) : "out of memory");
        rc = s ? RNND_ERR_IO : RNND_ERR_NOMEM;
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        *reason = "not_regular";
        goto fail;
    }
    /* Another user's file was not written by this daemon (and a large one would be read
     * and hashed before the daemon listens): refused before any of it is read. */
    if (st.st_uid != geteuid()) {
        snprintf(err, errlen, "%s: owned by uid %u, not the daemon's user %u", path,
                 (unsigned)st.st_uid, (unsigned)geteuid());
        *reason = "not_owner";
        goto fail;
    }
    if ((uintmax_t)st.st_size > max_bytes) {
        snprintf(err, errlen,
                 "%s: %lld bytes, above the most a snapshot can hold (%zu: "
                 "max_sessions records and max_state_bytes of states)",
                 path, (long long)st.st_size, max_bytes);
        *reason = "too_large";
        goto fail;
    }
    if ((size_t)st.st_size < HEAD_BYTES) {
        snprintf(err, errlen, "%s: truncated (%lld bytes)", path, (long long)st.st_size);
        goto fail;
    }
    /* read, not mapped: a file cut short meanwhile is a short read, not a SIGBUS */
    s->size = (size_t)st.st_size;
    if (!(s->map = malloc(s->size))) {
        snprintf(err, errlen, "%s: out of memory (%zu bytes)", path, s->size);
        rc = RNND_ERR_NOMEM;
        goto fail;
    }
    for (size_t got = 0; got < s->size;) {
        ssize_t r = read(fd, s->map + got, s->size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            snprintf(err, errlen, "%s: %s after %zu of %zu bytes", path,
                     r ? strerror(errno) : "truncated while read", got, s->size);
            rc = r ? RNND_ERR_IO : RNND_ERR_INVALID;
            goto fail;
        }
        got += (size_t)r;
    }
    uint32_t version, endian;
    memcpy(&version, s->map + 8, 4);
    memcpy(&endian, s->map + 12, 4);
    if (memcmp(s->map, head_magic, 8)) {
        snprintf(err, errlen, "%s: not an rnnd snapshot", path);
        goto fail;
    }
    if (version < FILE_DIGEST_VERSION || version > VERSION || endian != ENDIAN) {
        snprintf(err, errlen,
                 "%s: snapshot version %u (byte order %08x) is not one this build "
                 "reads (%u to %u)",
                 path, version, endian, FILE_DIGEST_VERSION, VERSION);
        goto fail;
    }
    s->version = version;
    /* Authenticate before anything else of the file is believed: a file that is not this
     * key's (another key's, forged, or cut short) is refused whole. */
    size_t body = s->size;
    if (version >= SIGNED_VERSION) {
        unsigned char mac[RNND_HMAC_BYTES];
        int ok = s->size >= HEAD_BYTES + TAIL_BYTES + RNND_HMAC_BYTES;
        if (ok) {
            body = s->size - RNND_HMAC_BYTES;
            rnnd_hmac_sha256(key, RNND_SNAPKEY_BYTES, s->map, body, mac);
            ok = rnnd_hmac_equal(mac, s->map + body, sizeof mac);
        }
        if (!ok) {
            snprintf(err, errlen,
                     "%s: the snapshot key's MAC does not match (written with "
                     "another key, altered or truncated)",
                     path);
            *reason = "bad_mac";
            rc = RNND_ERR_AUTH;
            goto fail;
        }
    } else if (!accept_unsigned) {
        snprintf(err, errlen,
                 "%s: an unsigned version %u snapshot, accepted only at the "
                 "start that creates the snapshot key",
                 path, version);
        *reason = "unsigned";
        rc = RNND_ERR_AUTH;
        goto fail;
    }
    if (body < HEAD_BYTES + TAIL_BYTES) {
        snprintf(err, errlen, "%s: truncated (%zu bytes)", path, s->size);
        goto fail;
    }
    unsigned char hash[32];
    rnnd_sha256 sha;
    rnnd_sha256_init(&sha);
    rnnd_sha256_update(&sha, s->map, body - 32);
    rnnd_sha256_final(&sha, hash);
    const unsigned char *tail = s->map + body - TAIL_BYTES;
    if (memcmp(tail, tail_magic, 8) || memcmp(hash, s->map + body - 32, 32)) {
        snprintf(err, errlen, "%s: checksum mismatch (truncated or corrupt)", path);
        goto fail;
    }
    uint64_t count;
    memcpy(&count, tail + 8, 8);
    if (count > body / 4) {
        snprintf(err, errlen, "%s: bad record count", path);
        goto fail;
    }
    s->offs = malloc((count ? count : 1) * sizeof *s->offs);
    if (!s->offs) {
        snprintf(err, errlen, "%s: out of memory", path);
        rc = RNND_ERR_NOMEM;
        goto fail;
    }
    /* walk and check every record now, so that rnnd_snap_get cannot fail */
    size_t off = HEAD_BYTES, end = body - TAIL_BYTES;
    for (uint64_t i = 0; i < count; i++) {
        uint32_t len;
        if (end - off < 4) {
            snprintf(err, errlen, "%s: record %llu: truncated", path, (unsigned long long)i);
            goto fail;
        }
        memcpy(&len, s->map + off, 4);
        if (end - off - 4 < len) {
            snprintf(err, errlen, "%s: record %llu: truncated", path, (unsigned long long)i);
            goto fail;
        }
        struct cur c = {s->map + off + 4, s->map + off + 4 + len, 0};
        rnnd_snap_rec rec;
        if (parse_rec(&c, &rec) || ((uintptr_t)rec.state % sizeof(float))) {
            snprintf(err, errlen, "%s: record %llu: malformed", path, (unsigned long long)i);
            goto fail;
        }
        s->offs[i] = off + 4;
        off += 4 + (size_t)len;
    }
    if (off != end) {
        snprintf(err, errlen, "%s: %zu bytes after the last record", path, end - off);
        goto fail;
    }
    s->n = (size_t)count;
    close(fd);
    free(path);
    *out = s;
    return RNND_OK;
fail:
    close(fd);
    free(path);
    rnnd_snap_free(s);
    return rc;
}

void rnnd_snap_get(const rnnd_snap *s, size_t i, rnnd_snap_rec *rec)
{
    uint32_t len;
    memcpy(&len, s->map + s->offs[i] - 4, 4);
    struct cur c = {s->map + s->offs[i], s->map + s->offs[i] + len, 0};
    parse_rec(&c, rec); /* checked by rnnd_snap_load: cannot fail */
    rec->file_digest = s->version == FILE_DIGEST_VERSION;
}
