/* Snapshot authentication (src/snapkey.c, src/snapshot.c; docs/state.md, docs/security.md
 * "Files").
 *
 * test_rfc4231: HMAC-SHA256 against the seven test cases of RFC 4231 (case 5 truncated to
 * 128 bits, as the RFC gives it), one-shot and fed in pieces.
 * test_key_file: a missing key file is created with 32 bytes, mode 0600, and read back the
 * same at the next start; a file of another size, one that group or others may read, a
 * symbolic link (even to a good key) and a FIFO are refused with "PATH: reason".
 * test_key_path: the default is the state folder's path + ".key" (beside it, not in it); a key
 * inside the state folder (at any depth, through a link) is refused.
 * test_signed: a snapshot written with a key loads with it; with another key, with one byte
 * flipped anywhere (header, record, hash, MAC) or with its MAC cut short, it is refused with
 * RNND_ERR_AUTH and reason bad_mac; an unsigned version 3 file loads only when unsigned files
 * are accepted (the start that creates the key), and is refused as "unsigned" otherwise.
 * test_key_owner: a key file owned by another uid (a key planted in a shared parent folder) is
 * refused with "PATH: owned by uid N, not the daemon's user M".
 * test_hostile_names: names planted in the state folder are never followed nor block: a
 * symbolic link, a FIFO or a non-empty folder at sessions.snap.tmp (the writer's temporary
 * name is random; none is left), a link at sessions.snap (the writer replaces
 * the link, the target is untouched); the reader refuses a link ("symlink") and a FIFO or a
 * folder ("not_regular") at sessions.snap at once.
 * test_limits: a snapshot above the cap (rnnd_snap_max_bytes; a sparse 4 GiB file) is
 * refused as "too_large" without being read, one of another uid as "not_owner" (as root).
 * test_serial: the rollback guard's file (KEY.serial): none reads as 0; written and read
 * back; replaced atomically (no temporary file left, a link planted at the temporary name
 * not followed); a link, a FIFO, junk, 0 or a negative number, a group-writable file are
 * refused with "PATH: reason". */
#include "config.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rnnd/status.h"
#include "snapkey.h"
#include "snapshot.h"

static void unhex(const char *h, unsigned char *out, size_t *n)
{
    size_t len = strlen(h) / 2;
    for (size_t i = 0; i < len; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        out[i] = (unsigned char)v;
    }
    *n = len;
}

static const struct {
    const char *key, *data, *mac;
} rfc4231[] = {
    {"0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", "4869205468657265",
     "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
    {"4a656665", "7768617420646f2079612077616e7420666f72206e6f7468696e673f",
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
    {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
     "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
     "dddddddddddddddd",
     "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"},
    {"0102030405060708090a0b0c0d0e0f10111213141516171819",
     "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"
     "cdcdcdcdcdcdcdcd",
     "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"},
    {"0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c", "546573742057697468205472756e636174696f6e",
     "a3b6167473100ee06e0c796c2955552b"},
    {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaa",
     "54657374205573696e67204c6172676572205468616e20426c6f636b2d53697a65204b6579202d204861"
     "7368204b6579204669727374",
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
    {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaa",
     "5468697320697320612074657374207573696e672061206c6172676572207468616e20626c6f636b2d73"
     "697a65206b657920616e642061206c6172676572207468616e20626c6f636b2d73697a6520646174612e"
     "20546865206b6579206e6565647320746f20626520686173686564206265666f7265206265696e672075"
     "7365642062792074686520484d414320616c676f726974686d2e",
     "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"},
};

START_TEST(test_rfc4231)
{
    for (size_t t = 0; t < sizeof rfc4231 / sizeof rfc4231[0]; t++) {
        unsigned char key[256], data[256], want[32], got[32];
        size_t kn, dn, mn;
        unhex(rfc4231[t].key, key, &kn);
        unhex(rfc4231[t].data, data, &dn);
        unhex(rfc4231[t].mac, want, &mn);
        rnnd_hmac_sha256(key, kn, data, dn, got);
        ck_assert_msg(!memcmp(got, want, mn), "RFC 4231 case %zu", t + 1);
        rnnd_hmac h;
        rnnd_hmac_init(&h, key, kn);
        for (size_t i = 0; i < dn; i += 7)
            rnnd_hmac_update(&h, data + i, dn - i < 7 ? dn - i : 7);
        rnnd_hmac_final(&h, got);
        ck_assert_msg(!memcmp(got, want, mn), "RFC 4231 case %zu in pieces", t + 1);
        ck_assert(rnnd_hmac_equal(got, want, mn));
        got[mn - 1] ^= 0x80;
        ck_assert(!rnnd_hmac_equal(got, want, mn));
    }
}
END_TEST

static char dir[64];

static void make_dir(void)
{
    snprintf(dir, sizeof dir, "/tmp/check_snapkey.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void remove_dir(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

static void write_file(const char *path, const void *p, size_t n, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, p, n), (ssize_t)n);
    close(fd);
    ck_assert_int_eq(chmod(path, mode), 0);
}

/* Load PATH expecting a refusal whose message starts with PATH and contains WHAT. */
static void refused(const char *path, const char *what)
{
    unsigned char key[RNND_SNAPKEY_BYTES];
    char err[512] = "";
    int created = 7;
    int rc = rnnd_snapkey_load(path, key, &created, err, sizeof err);
    ck_assert_msg(rc < 0, "%s: accepted, expected \"%s\"", path, what);
    ck_assert_int_eq(created, 0);
    ck_assert_msg(!strncmp(err, path, strlen(path)) && strstr(err, what),
                  "message \"%s\", expected \"%s: ...%s...\"", err, path, what);
}

START_TEST(test_key_file)
{
    make_dir();
    char path[128], other[128];
    snprintf(path, sizeof path, "%s/snap.key", dir);
    unsigned char k1[RNND_SNAPKEY_BYTES], k2[RNND_SNAPKEY_BYTES];
    char err[512] = "";
    int created = 0;
    ck_assert_int_eq(rnnd_snapkey_load(path, k1, &created, err, sizeof err), 0);
    ck_assert_int_eq(created, 1);
    struct stat st;
    ck_assert_int_eq(lstat(path, &st), 0);
    ck_assert(S_ISREG(st.st_mode));
    ck_assert_int_eq(st.st_mode & 07777, 0600);
    ck_assert_int_eq(st.st_size, RNND_SNAPKEY_BYTES);
    ck_assert_int_eq(rnnd_snapkey_load(path, k2, &created, err, sizeof err), 0);
    ck_assert_int_eq(created, 0);
    ck_assert(!memcmp(k1, k2, sizeof k1));

    /* a symbolic link, even to a good key, is refused (O_NOFOLLOW), and nothing is created */
    snprintf(other, sizeof other, "%s/link.key", dir);
    ck_assert_int_eq(symlink(path, other), 0);
    refused(other, "symbolic link");
    snprintf(other, sizeof other, "%s/dangling.key", dir);
    ck_assert_int_eq(symlink("/nonexistent/rnnd.key", other), 0);
    refused(other, "symbolic link");

    chmod(path, 0640);
    refused(path, "mode 0640");
    chmod(path, 0604);
    refused(path, "mode 0604");
    chmod(path, 0400);
    ck_assert_int_eq(rnnd_snapkey_load(path, k2, &created, err, sizeof err), 0);

    write_file(path, k1, 31, 0600);
    refused(path, "31 bytes");
    write_file(path, "", 0, 0600);
    refused(path, "0 bytes");
    snprintf(other, sizeof other, "%s/fifo.key", dir);
    ck_assert_int_eq(mkfifo(other, 0600), 0);
    refused(other, "not a regular file");
    snprintf(other, sizeof other, "%s/nodir/snap.key", dir);
    refused(other, "cannot create");
    remove_dir();
}
END_TEST

START_TEST(test_key_path)
{
    char err[256], *p;
    ck_assert_int_eq(rnnd_snapkey_path("/var/lib/rnnd", "", &p, err, sizeof err), 0);
    ck_assert_str_eq(p, "/var/lib/rnnd.key");
    free(p);
    ck_assert_int_eq(rnnd_snapkey_path("/var/lib/rnnd//", "", &p, err, sizeof err), 0);
    ck_assert_str_eq(p, "/var/lib/rnnd.key");
    free(p);
    ck_assert_int_eq(rnnd_snapkey_path("/var/lib/rnnd", "/etc/k", &p, err, sizeof err), 0);
    ck_assert_str_eq(p, "/etc/k");
    free(p);
    ck_assert_int_eq(rnnd_snapkey_path("/", "", &p, err, sizeof err), RNND_ERR_INVALID);
    ck_assert_ptr_null(p);
    ck_assert(strstr(err, "snapshot_key_file") != NULL);

    /* inside state_dir, at any depth or through a link, is refused; beside it is not */
    make_dir();
    char state[128], other[160], link[160];
    snprintf(state, sizeof state, "%s/state", dir);
    ck_assert_int_eq(mkdir(state, 0700), 0);
    snprintf(other, sizeof other, "%s/sub", state);
    ck_assert_int_eq(mkdir(other, 0700), 0);
    snprintf(link, sizeof link, "%s/link", dir);
    ck_assert_int_eq(symlink(state, link), 0);
    const char *inside[] = {"/state/snap.key", "/state/sub/snap.key", "/link/snap.key",
                            "/state/../state/k"};
    for (size_t i = 0; i < sizeof inside / sizeof inside[0]; i++) {
        snprintf(other, sizeof other, "%s%s", dir, inside[i]);
        ck_assert_msg(rnnd_snapkey_check_outside(other, state, err, sizeof err) ==
                              RNND_ERR_INVALID &&
                          strstr(err, "inside state_dir"),
                      "%s", other);
    }
    snprintf(other, sizeof other, "%s/state.key", dir);
    ck_assert_int_eq(rnnd_snapkey_check_outside(other, state, err, sizeof err), 0);
    snprintf(other, sizeof other, "%s/stateful", dir); /* a prefix of it, not the folder */
    ck_assert_int_eq(mkdir(other, 0700), 0);
    strcat(other, "/k");
    ck_assert_int_eq(rnnd_snapkey_check_outside(other, state, err, sizeof err), 0);
    remove_dir();
}
END_TEST

static const unsigned char KEY_A[RNND_SNAPKEY_BYTES] = "key A: thirty-two bytes of key..";
static const unsigned char KEY_B[RNND_SNAPKEY_BYTES] = "key B: thirty-two bytes of key..";

/* Write a snapshot of two records with KEY into DIR; returns its size. */
static size_t write_snapshot(const unsigned char *key)
{
    static const float state[5] = {1, -2, 3.5f, 0, 1e-3f};
    rnnd_snap_writer *w;
    char err[512];
    ck_assert_int_eq(rnnd_snap_writer_open(dir, key, 1795430348, &w, err, sizeof err), 0);
    for (int r = 0; r < 2; r++) {
        rnnd_snap_rec rec;
        memset(&rec, 0, sizeof rec);
        snprintf(rec.id, sizeof rec.id, "%032x", 0x5eed + r);
        snprintf(rec.model, sizeof rec.model, "m%d", r);
        memset(rec.digest, 'a', 64);
        rec.steps = 3;
        rec.created = 1795430348;
        rec.ttl_s = 60;
        rec.state = state;
        rec.n_floats = 5;
        ck_assert_int_eq(rnnd_snap_writer_add(w, &rec), 0);
    }
    size_t n, bytes;
    ck_assert_int_eq(rnnd_snap_writer_commit(w, &n, &bytes, err, sizeof err), 0);
    ck_assert_int_eq(n, 2);
    return bytes;
}

static unsigned char *read_snapshot(size_t *n)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, RNND_SNAPSHOT_FILE);
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    static unsigned char buf[4096];
    *n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return buf;
}

static void put_snapshot(const unsigned char *p, size_t n)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, RNND_SNAPSHOT_FILE);
    write_file(path, p, n, 0600);
}

/* Load DIR's snapshot: 0 and two records, or the status with *REASON. */
static int load(const unsigned char *key, int accept_unsigned, const char **reason)
{
    rnnd_snap *s = NULL;
    char err[512] = "";
    *reason = NULL;
    int rc = rnnd_snap_load(dir, key, accept_unsigned, SIZE_MAX, &s, reason, err, sizeof err);
    if (!rc) {
        ck_assert_int_eq(rnnd_snap_count(s), 2);
        rnnd_snap_rec rec;
        rnnd_snap_get(s, 1, &rec);
        ck_assert_str_eq(rec.model, "m1");
        ck_assert(rec.state[2] == 3.5f);
    } else {
        ck_assert(err[0] != '\0');
    }
    rnnd_snap_free(s);
    return rc;
}

START_TEST(test_signed)
{
    make_dir();
    const char *why;
    size_t size = write_snapshot(KEY_A), n;
    ck_assert_int_eq(load(KEY_A, 0, &why), 0);
    unsigned char *good = read_snapshot(&n), copy[4096];
    ck_assert_int_eq(n, size);
    uint32_t version;
    memcpy(&version, good + 8, 4);
    ck_assert_int_eq(version, 4);
    memcpy(copy, good, n);

    ck_assert_int_eq(load(KEY_B, 0, &why), RNND_ERR_AUTH);
    ck_assert_str_eq(why, "bad_mac");
    ck_assert_int_eq(load(KEY_B, 1, &why), RNND_ERR_AUTH); /* signed: never unsigned */
    /* one flipped bit anywhere: the header, the first record, the hash, the MAC */
    const size_t at[] = {16, 30, n / 2, n - 40, n - 1};
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
        copy[at[i]] ^= 1;
        put_snapshot(copy, n);
        ck_assert_msg(load(KEY_A, 1, &why) == RNND_ERR_AUTH && !strcmp(why, "bad_mac"),
                      "byte %zu flipped: not refused as bad_mac", at[i]);
        copy[at[i]] ^= 1;
    }
    /* the MAC cut short, or cut off whole */
    put_snapshot(copy, n - 1);
    ck_assert_int_eq(load(KEY_A, 1, &why), RNND_ERR_AUTH);
    ck_assert_str_eq(why, "bad_mac");
    put_snapshot(copy, n - RNND_HMAC_BYTES);
    ck_assert_int_eq(load(KEY_A, 1, &why), RNND_ERR_AUTH);

    /* the same file as an unsigned version 3 (its own SHA-256 trailer made right) */
    uint32_t v3 = 3;
    memcpy(copy + 8, &v3, 4);
    size_t n3 = n - RNND_HMAC_BYTES;
    rnnd_sha256 sha;
    rnnd_sha256_init(&sha);
    rnnd_sha256_update(&sha, copy, n3 - 32);
    rnnd_sha256_final(&sha, copy + n3 - 32);
    put_snapshot(copy, n3);
    ck_assert_int_eq(load(KEY_A, 1, &why), 0);
    ck_assert_int_eq(load(KEY_A, 0, &why), RNND_ERR_AUTH);
    ck_assert_str_eq(why, "unsigned");
    remove_dir();
}
END_TEST

START_TEST(test_key_owner)
{
    make_dir();
    char path[128], err[512] = "";
    unsigned char key[RNND_SNAPKEY_BYTES];
    int created;
    snprintf(path, sizeof path, "%s/snap.key", dir);
    ck_assert_int_eq(rnnd_snapkey_load(path, key, &created, err, sizeof err), 0);
    char want[128];
    if (geteuid() == 0) {
        /* root's daemon must not take a key another user could have written */
        ck_assert_int_eq(chown(path, 4242, 4242), 0);
        snprintf(want, sizeof want, "owned by uid 4242, not the daemon's user 0");
        refused(path, want);
        ck_assert_int_eq(chown(path, 0, 0), 0);
        ck_assert_int_eq(rnnd_snapkey_load(path, key, &created, err, sizeof err), 0);
    } else {
        /* not root: a file root owns is another user's (checked before mode and size) */
        snprintf(want, sizeof want, "owned by uid 0, not the daemon's user %lu",
                 (unsigned long)geteuid());
        refused("/etc/passwd", want);
    }
    remove_dir();
}
END_TEST

static int file_is(const char *path, const char *text)
{
    char buf[64] = "";
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return !strcmp(buf, text);
}

/* The writer's temporary files (RNND_SNAPSHOT_FILE ".tmp" and a suffix) left in DIR. */
static int temp_files(void)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += !strncmp(e->d_name, RNND_SNAPSHOT_FILE ".tmp", strlen(RNND_SNAPSHOT_FILE) + 4);
    closedir(d);
    return n;
}

/* test_limits: the cap and the owner check come before any byte is read. */
START_TEST(test_limits)
{
    make_dir();
    size_t size = write_snapshot(KEY_A);
    char snap[128], err[512];
    snprintf(snap, sizeof snap, "%s/%s", dir, RNND_SNAPSHOT_FILE);
    /* two records of 5 floats fit the cap of 2 sessions and 40 bytes of state, exactly or
     * less: the cap is the largest file such a daemon can write */
    size_t cap = rnnd_snap_max_bytes(2, 2 * 5 * sizeof(float));
    ck_assert_uint_ge(cap, size);
    ck_assert_uint_lt(cap, size + 2 * 700);
    ck_assert_uint_eq(rnnd_snap_max_bytes(SIZE_MAX / 2, 1), SIZE_MAX);
    rnnd_snap *s = NULL;
    const char *why = NULL;
    ck_assert_int_eq(rnnd_snap_load(dir, KEY_A, 0, size, &s, &why, err, sizeof err), 0);
    rnnd_snap_free(s);
    ck_assert_int_eq(rnnd_snap_load(dir, KEY_A, 0, size - 1, &s, &why, err, sizeof err),
                     RNND_ERR_INVALID);
    ck_assert_str_eq(why, "too_large");
    ck_assert_ptr_nonnull(strstr(err, "above the most a snapshot can hold"));
    /* a sparse 4 GiB file: refused at once, not read */
    ck_assert_int_eq(truncate(snap, (off_t)4 << 30), 0);
    ck_assert_int_eq(rnnd_snap_load(dir, KEY_A, 0, cap, &s, &why, err, sizeof err),
                     RNND_ERR_INVALID);
    ck_assert_str_eq(why, "too_large");
    write_snapshot(KEY_A);
    if (geteuid() == 0) { /* only root can give a file away */
        ck_assert_int_eq(chown(snap, 4242, 4242), 0);
        ck_assert_int_eq(rnnd_snap_load(dir, KEY_A, 0, cap, &s, &why, err, sizeof err),
                         RNND_ERR_INVALID);
        ck_assert_str_eq(why, "not_owner");
        ck_assert_ptr_nonnull(strstr(err, "owned by uid 4242"));
    }
    remove_dir();
}
END_TEST

START_TEST(test_hostile_names)
{
    make_dir();
    char snap[128], tmp[128], victim[128], copy[128];
    snprintf(snap, sizeof snap, "%s/%s", dir, RNND_SNAPSHOT_FILE);
    snprintf(tmp, sizeof tmp, "%s/%s.tmp", dir, RNND_SNAPSHOT_FILE);
    snprintf(victim, sizeof victim, "%s/victim", dir);
    write_file(victim, "victim", 6, 0644);
    struct stat st;
    const char *why;

    /* The writer's temporary file has a fresh random name each time: nothing planted at the
     * old fixed name (a link, a FIFO, a folder with something in it, which unlinkat could not
     * remove and which made every snapshot fail) is opened, followed or needed. */
    ck_assert_int_eq(symlink(victim, tmp), 0);
    write_snapshot(KEY_A);
    ck_assert(file_is(victim, "victim"));
    ck_assert_int_eq(load(KEY_A, 0, &why), 0);
    ck_assert_int_eq(unlink(tmp), 0);
    ck_assert_int_eq(mkfifo(tmp, 0600), 0);
    write_snapshot(KEY_A);
    ck_assert_int_eq(load(KEY_A, 0, &why), 0);
    ck_assert_int_eq(unlink(tmp), 0);
    char sub[160];
    ck_assert_int_eq(mkdir(tmp, 0700), 0);
    snprintf(sub, sizeof sub, "%s/x", tmp);
    ck_assert_int_eq(mkdir(sub, 0700), 0);
    write_snapshot(KEY_A);
    ck_assert_int_eq(load(KEY_A, 0, &why), 0);
    ck_assert_int_eq(rmdir(sub), 0);
    ck_assert_int_eq(rmdir(tmp), 0);
    ck_assert_int_eq(temp_files(), 0);
    /* a link at the final name: the rename replaces the link, the target is untouched */
    ck_assert_int_eq(unlink(snap), 0);
    ck_assert_int_eq(symlink(victim, snap), 0);
    write_snapshot(KEY_A);
    ck_assert(file_is(victim, "victim"));
    ck_assert_int_eq(lstat(snap, &st), 0);
    ck_assert(S_ISREG(st.st_mode));

    /* reading: a link (even to a good snapshot), a FIFO, a folder are refused at once */
    snprintf(copy, sizeof copy, "%s/copy.snap", dir);
    ck_assert_int_eq(rename(snap, copy), 0);
    ck_assert_int_eq(symlink(copy, snap), 0);
    ck_assert_int_eq(load(KEY_A, 0, &why), RNND_ERR_INVALID);
    ck_assert_str_eq(why, "symlink");
    ck_assert_int_eq(unlink(snap), 0);
    ck_assert_int_eq(mkfifo(snap, 0600), 0);
    ck_assert_int_eq(load(KEY_A, 0, &why), RNND_ERR_INVALID);
    ck_assert_str_eq(why, "not_regular");
    ck_assert_int_eq(unlink(snap), 0);
    ck_assert_int_eq(mkdir(snap, 0700), 0);
    ck_assert_int_eq(load(KEY_A, 0, &why), RNND_ERR_INVALID);
    ck_assert_str_eq(why, "not_regular");
    remove_dir();
}
END_TEST

START_TEST(test_serial)
{
    make_dir();
    char key[128], path[160], tmp[160], victim[128], err[512] = "";
    snprintf(key, sizeof key, "%s/snap.key", dir);
    snprintf(path, sizeof path, "%s.serial", key);
    snprintf(tmp, sizeof tmp, "%s.serial.tmp", key);
    snprintf(victim, sizeof victim, "%s/victim", dir);
    int64_t serial = 7;
    ck_assert_int_eq(rnnd_snapserial_read(key, &serial, err, sizeof err), 0);
    ck_assert_int_eq(serial, 0);
    write_file(victim, "victim", 6, 0644);
    ck_assert_int_eq(symlink(victim, tmp), 0);
    ck_assert_int_eq(rnnd_snapserial_write(key, 1795430348, err, sizeof err), 0);
    ck_assert(file_is(victim, "victim"));
    ck_assert(file_is(path, "1795430348\n"));
    struct stat st;
    ck_assert_int_eq(lstat(tmp, &st), -1);
    ck_assert_int_eq(lstat(path, &st), 0);
    ck_assert_int_eq(st.st_mode & 07777, 0600);
    ck_assert_int_eq(rnnd_snapserial_write(key, 1795430349, err, sizeof err), 0);
    ck_assert_int_eq(rnnd_snapserial_read(key, &serial, err, sizeof err), 0);
    ck_assert_int_eq(serial, 1795430349);

    static const struct {
        const char *text;
        mode_t mode;
        const char *want;
    } bad[] = {{"abc\n", 0600, "not a snapshot serial"}, {"0\n", 0600, "not a snapshot serial"},
               {"-5\n", 0600, "not a snapshot serial"},  {"12\n34\n", 0600, "not a snapshot"},
               {"", 0600, "not a snapshot serial"},      {"12\n", 0620, "mode 0620"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_file(path, bad[i].text, strlen(bad[i].text), bad[i].mode);
        ck_assert_int_lt(rnnd_snapserial_read(key, &serial, err, sizeof err), 0);
        ck_assert_msg(!strncmp(err, path, strlen(path)) && strstr(err, bad[i].want),
                      "\"%s\": message \"%s\", expected \"%s\"", bad[i].text, err, bad[i].want);
    }
    ck_assert_int_eq(unlink(path), 0);
    ck_assert_int_eq(symlink(victim, path), 0);
    ck_assert_int_lt(rnnd_snapserial_read(key, &serial, err, sizeof err), 0);
    ck_assert_ptr_nonnull(strstr(err, "symbolic link"));
    ck_assert_int_eq(unlink(path), 0);
    ck_assert_int_eq(mkfifo(path, 0600), 0);
    ck_assert_int_lt(rnnd_snapserial_read(key, &serial, err, sizeof err), 0);
    ck_assert_ptr_nonnull(strstr(err, "not a regular file"));
    remove_dir();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("snapkey");
    TCase *tc = tcase_create("snapkey");
    tcase_add_test(tc, test_rfc4231);
    tcase_add_test(tc, test_key_file);
    tcase_add_test(tc, test_key_path);
    tcase_add_test(tc, test_signed);
    tcase_add_test(tc, test_key_owner);
    tcase_add_test(tc, test_hostile_names);
    tcase_add_test(tc, test_limits);
    tcase_add_test(tc, test_serial);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
