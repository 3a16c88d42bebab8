/* The snapshot key (see snapkey.h). */
#include "snapkey.h"

#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rng.h"
#include "rnnd/status.h"

#define BLOCK 64

void rnnd_hmac_init(rnnd_hmac *h, const void *key, size_t keylen)
{
    unsigned char k[BLOCK] = {0}, pad[BLOCK];
    if (keylen > BLOCK) {
        rnnd_sha256 c;
        rnnd_sha256_init(&c);
        rnnd_sha256_update(&c, key, keylen);
        rnnd_sha256_final(&c, k);
    } else if (keylen) {
        memcpy(k, key, keylen);
    }
    for (size_t i = 0; i < BLOCK; i++)
        pad[i] = k[i] ^ 0x36;
    rnnd_sha256_init(&h->inner);
    rnnd_sha256_update(&h->inner, pad, BLOCK);
    for (size_t i = 0; i < BLOCK; i++)
        pad[i] = k[i] ^ 0x5c;
    rnnd_sha256_init(&h->outer);
    rnnd_sha256_update(&h->outer, pad, BLOCK);
    memset(k, 0, sizeof k);
    memset(pad, 0, sizeof pad);
}

void rnnd_hmac_update(rnnd_hmac *h, const void *data, size_t len)
{
    rnnd_sha256_update(&h->inner, data, len);
}

void rnnd_hmac_final(rnnd_hmac *h, unsigned char out[RNND_HMAC_BYTES])
{
    unsigned char ih[32];
    rnnd_sha256_final(&h->inner, ih);
    rnnd_sha256_update(&h->outer, ih, sizeof ih);
    rnnd_sha256_final(&h->outer, out);
    memset(h, 0, sizeof *h);
}

void rnnd_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
                      unsigned char out[RNND_HMAC_BYTES])
{
    rnnd_hmac h;
    rnnd_hmac_init(&h, key, keylen);
    rnnd_hmac_update(&h, data, len);
    rnnd_hmac_final(&h, out);
}

int rnnd_hmac_equal(const unsigned char *a, const unsigned char *b, size_t n)
{
    volatile unsigned char d = 0;
    for (size_t i = 0; i < n; i++)
        d |= a[i] ^ b[i];
    return d == 0;
}

int rnnd_snapkey_path(const char *state_dir, const char *setting, char **out, char *err,
                      size_t errlen)
{
    *out = NULL;
    const char *base = setting && *setting ? setting : state_dir;
    size_t n = strlen(base);
    if (!(setting && *setting))
        while (n && base[n - 1] == '/')
            n--;
    if (!n) {
        snprintf(err, errlen,
                 "snapshot_key_file: state_dir \"%s\" has no folder beside it; "
                 "set snapshot_key_file",
                 state_dir);
        return RNND_ERR_INVALID;
    }
    const char *suffix = setting && *setting ? "" : ".key";
    char *p = malloc(n + strlen(suffix) + 1);
    if (!p) {
        snprintf(err, errlen, "snapshot_key_file: out of memory");
        return RNND_ERR_NOMEM;
    }
    memcpy(p, base, n);
    strcpy(p + n, suffix);
    *out = p;
    return RNND_OK;
}

int rnnd_snapkey_check_outside(const char *path, const char *state_dir, char *err, size_t errlen)
{
    char *copy = strdup(path);
    if (!copy) {
        snprintf(err, errlen, "%s: out of memory", path);
        return RNND_ERR_NOMEM;
    }
    char *slash = strrchr(copy, '/');
    const char *dir = !slash ? "." : slash == copy ? "/" : (*slash = '\0', copy);
    char *kdir = realpath(dir, NULL), *sdir = realpath(state_dir, NULL);
    int rc = RNND_OK;
    if (kdir && sdir) {
        size_t n = strlen(sdir);
        if (!strncmp(kdir, sdir, n) && (kdir[n] == '\0' || kdir[n] == '/' || n == 1)) {
            snprintf(err, errlen,
                     "%s: inside state_dir %s; keep the snapshot key outside it "
                     "(snapshot_key_file)",
                     path, state_dir);
            rc = RNND_ERR_INVALID;
        }
    }
    free(kdir);
    free(sdir);
    free(copy);
    return rc;
}

/* fsync the folder that holds PATH (best effort). */
static void fsync_folder(const char *path)
{
    char *dir = strdup(path), *slash = dir ? strrchr(dir, '/') : NULL;
    if (!dir)
        return;
    if (slash == dir)
        slash[1] = '\0';
    else if (slash)
        *slash = '\0';
    int dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    free(dir);
}

/* Make the key file: O_EXCL, so that a file that appears meanwhile (or a link planted there)
 * is never written through; fsync, so that a crash cannot leave a short key behind. */
static int create_key(const char *path, unsigned char key[RNND_SNAPKEY_BYTES], char *err,
                      size_t errlen)
{
    if (rnnd_random_bytes(key, RNND_SNAPKEY_BYTES)) {
        snprintf(err, errlen, "%s: getrandom: %s", path, strerror(errno));
        return RNND_ERR_IO;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot create: %s", path, strerror(errno));
        return RNND_ERR_IO;
    }
    ssize_t w = write(fd, key, RNND_SNAPKEY_BYTES);
    int e = errno;
    if (w != RNND_SNAPKEY_BYTES || fsync(fd)) {
        e = w == RNND_SNAPKEY_BYTES ? errno : w < 0 ? e : ENOSPC;
        close(fd);
        unlink(path);
        snprintf(err, errlen, "%s: cannot write: %s", path, strerror(e));
        return RNND_ERR_IO;
    }
    close(fd);
    fsync_folder(path); /* the new name is durable once its folder is */
    return RNND_OK;
}

/* FD (opened as PATH) must be a regular file of the daemon's own user: a file someone else
 * owns is one they could have chosen (a shared parent folder). 0 with *ST filled, or
 * RNND_ERR_INVALID / RNND_ERR_IO with ERR saying why. */
static int own_regular_file(int fd, const char *path, struct stat *st, char *err, size_t errlen)
{
    if (fstat(fd, st)) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return RNND_ERR_IO;
    }
    if (!S_ISREG(st->st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        return RNND_ERR_INVALID;
    }
    if (st->st_uid != geteuid()) {
        snprintf(err, errlen, "%s: owned by uid %lu, not the daemon's user %lu", path,
                 (unsigned long)st->st_uid, (unsigned long)geteuid());
        return RNND_ERR_INVALID;
    }
    return RNND_OK;
}

int rnnd_snapkey_load(const char *path, unsigned char key[RNND_SNAPKEY_BYTES], int *created,
                      char *err, size_t errlen)
{
    *created = 0;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        int rc = create_key(path, key, err, errlen);
        if (!rc)
            *created = 1;
        return rc;
    }
    if (fd < 0) {
        int e = errno;
        if (e == ELOOP)
            snprintf(err, errlen, "%s: a symbolic link; the key file must be a regular file", path);
        else
            snprintf(err, errlen, "%s: %s", path, strerror(e));
        return e == ELOOP ? RNND_ERR_INVALID : RNND_ERR_IO;
    }
    struct stat st;
    int rc = own_regular_file(fd, path, &st, err, errlen);
    if (rc) {
        /* said */
    } else if (st.st_mode & 077) {
        snprintf(err, errlen,
                 "%s: mode %04o lets others read or write the key; expected 0600 "
                 "or 0400",
                 path, (unsigned)(st.st_mode & 07777));
        rc = RNND_ERR_INVALID;
    } else if (st.st_size != RNND_SNAPKEY_BYTES) {
        snprintf(err, errlen, "%s: %lld bytes; a snapshot key is %d random bytes", path,
                 (long long)st.st_size, RNND_SNAPKEY_BYTES);
        rc = RNND_ERR_INVALID;
    } else {
        ssize_t got = pread(fd, key, RNND_SNAPKEY_BYTES, 0);
        if (got != RNND_SNAPKEY_BYTES) {
            snprintf(err, errlen, "%s: cannot read: %s", path,
                     got < 0 ? strerror(errno) : "short read");
            rc = RNND_ERR_IO;
        }
    }
    close(fd);
    if (rc)
        memset(key, 0, RNND_SNAPKEY_BYTES);
    return rc;
}

static char *serial_path(const char *key_path, const char *suffix)
{
    size_t n = strlen(key_path) + strlen(suffix) + 1;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s%s", key_path, suffix);
    return p;
}

int rnnd_snapserial_read(const char *key_path, int64_t *serial, char *err, size_t errlen)
{
    *serial = 0;
    char *path = serial_path(key_path, ".serial");
    if (!path) {
        snprintf(err, errlen, "%s.serial: out of memory", key_path);
        return RNND_ERR_NOMEM;
    }
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "%s: %s", path, e == ELOOP ? "a symbolic link" : strerror(e));
        free(path);
        return e == ENOENT ? RNND_OK : e == ELOOP ? RNND_ERR_INVALID : RNND_ERR_IO;
    }
    struct stat st;
    char buf[32] = "";
    ssize_t got;
    int rc = own_regular_file(fd, path, &st, err, errlen);
    if (rc) {
        /* said */
    } else if (st.st_mode & 022) {
        snprintf(err, errlen, "%s: mode %04o lets others write it; expected 0600", path,
                 (unsigned)(st.st_mode & 07777));
        rc = RNND_ERR_INVALID;
    } else if ((got = pread(fd, buf, sizeof buf - 1, 0)) < 0) {
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        rc = RNND_ERR_IO;
    } else {
        buf[got] = '\0';
        char *end;
        errno = 0;
        long long v = strtoll(buf, &end, 10);
        if (end != buf && (*end == '\0' || (*end == '\n' && end[1] == '\0')) && !errno && v > 0) {
            *serial = (int64_t)v;
        } else {
            snprintf(err, errlen, "%s: not a snapshot serial (a decimal number above 0)", path);
            rc = RNND_ERR_INVALID;
        }
    }
    close(fd);
    free(path);
    return rc;
}

int rnnd_snapserial_write(const char *key_path, int64_t serial, char *err, size_t errlen)
{
    char *path = serial_path(key_path, ".serial"), *tmp = serial_path(key_path, ".serial.tmp");
    int rc = RNND_ERR_IO;
    if (!path || !tmp) {
        snprintf(err, errlen, "%s.serial: out of memory", key_path);
        rc = RNND_ERR_NOMEM;
        goto out;
    }
    char text[32];
    int n = snprintf(text, sizeof text, "%" PRId64 "\n", serial);
    int fd = -1;
    if (unlink(tmp) == 0 || errno == ENOENT)
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
        goto out;
    }
    ssize_t w = write(fd, text, (size_t)n);
    int e = errno;
    if (w != n || fsync(fd)) {
        e = w == n ? errno : w < 0 ? e : ENOSPC;
        close(fd);
        unlink(tmp);
        snprintf(err, errlen, "%s: cannot write: %s", tmp, strerror(e));
        goto out;
    }
    close(fd);
    if (rename(tmp, path)) {
        snprintf(err, errlen, "%s: cannot rename: %s", tmp, strerror(errno));
        unlink(tmp);
        goto out;
    }
    fsync_folder(path);
    rc = RNND_OK;
out:
    free(path);
    free(tmp);
    return rc;
}
