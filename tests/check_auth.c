/* API key checks (src/auth.c; docs/security.md "API keys"): a presented key is hashed and its
 * digest compared with every key's digest in full, with no early exit.
 *
 * test_every_byte: a digest that differs from the presented key's in any one bit of any byte
 * is not a match, and the matching key is found wherever it stands in the list.
 * test_no_early_exit: the keys are laid out so that a digest, or only its last byte, lies on
 * a page that cannot be read. A check that reads every digest in full touches that page and
 * faults, even when the match is the first key or the digest differs in its first byte; a
 * check that stops at the first match, or at the first differing byte of a byte loop, returns
 * normally, and the test fails (so does glibc's memcmp in its place; a memcmp inlined as
 * loads of the whole digest would not be caught). Each probe runs in a child process; control
 * probes with the last key wholly readable show the layout itself does not fault. */
#include "config.h"

#include <check.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "auth.h"
#include "sha256.h"

#define KEY "k7V2vq0pXbqL3m9Zr8Y4eT1wQ6s"
#define HEADER ("Bearer " KEY)

static void digest_of(const char *key, unsigned char out[32])
{
    rnnd_sha256 c;
    rnnd_sha256_init(&c);
    rnnd_sha256_update(&c, key, strlen(key));
    rnnd_sha256_final(&c, out);
}

/* N keys whose digests are all "other", except the one at MATCH (if < n) */
static void fill(rnnd_key *keys, size_t n, size_t match)
{
    unsigned char d[32];
    digest_of(KEY, d);
    for (size_t i = 0; i < n; i++) {
        memset(&keys[i], 0, sizeof keys[i]);
        snprintf(keys[i].name, sizeof keys[i].name, "key%zu", i);
        keys[i].owner = i + 1;
        memcpy(keys[i].digest, d, 32);
        if (i != match)
            keys[i].digest[i % 32] ^= 0x01;
    }
}

START_TEST(test_every_byte)
{
    rnnd_key keys[5];
    rnnd_auth a = {.keys = keys, .n = 5};
    for (size_t m = 0; m < 5; m++) {
        fill(keys, 5, m);
        ck_assert_ptr_eq(rnnd_auth_check(&a, HEADER), &keys[m]);
    }
    fill(keys, 5, 5);
    ck_assert_ptr_null(rnnd_auth_check(&a, HEADER));
    /* one key: each bit of each byte, flipped alone */
    rnnd_auth one = {.keys = keys, .n = 1};
    fill(keys, 1, 0);
    ck_assert_ptr_eq(rnnd_auth_check(&one, HEADER), &keys[0]);
    for (int j = 0; j < 32; j++) {
        for (int b = 0; b < 8; b++) {
            keys[0].digest[j] ^= (unsigned char)(1u << b);
            ck_assert_msg(rnnd_auth_check(&one, HEADER) == NULL,
                          "a digest differing in byte %d bit %d matched", j, b);
            keys[0].digest[j] ^= (unsigned char)(1u << b);
        }
    }
    ck_assert_ptr_eq(rnnd_auth_check(&one, HEADER), &keys[0]);
}
END_TEST

/* Two pages, the second unreadable. */
static unsigned char *guarded_pages(size_t *page)
{
    *page = (size_t)sysconf(_SC_PAGESIZE);
    unsigned char *p =
        mmap(NULL, 2 * *page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(p, MAP_FAILED);
    ck_assert_int_eq(mprotect(p + *page, *page, PROT_NONE), 0);
    return p;
}

/* Lay out N keys (the first one the match, the others differing in their first byte) so
 * that the first READABLE bytes of the last key's digest lie before the unreadable page
 * (negative: the page starts that many bytes before the digest), run the check in a child,
 * and return whether it returned normally with the first key. */
static int probe(size_t n, long readable)
{
    size_t page;
    unsigned char *p = guarded_pages(&page);
    unsigned char *guard = p + page;
    unsigned char *base =
        guard - (n - 1) * sizeof(rnnd_key) - offsetof(rnnd_key, digest) - readable;
    ck_assert_msg((uintptr_t)base % _Alignof(rnnd_key) == 0, "misaligned layout");
    rnnd_key *keys = (rnnd_key *)(void *)base;
    /* everything of the keys on the readable page is written; the digests but the first
     * differ in byte 0, so a byte loop with an early exit stops there */
    unsigned char d[32];
    digest_of(KEY, d);
    for (size_t i = 0; i < n; i++) {
        unsigned char *k = (unsigned char *)&keys[i];
        size_t fits =
            (size_t)(guard - k) < sizeof(rnnd_key) ? (size_t)(guard - k) : sizeof(rnnd_key);
        memset(k, 0, fits);
        size_t dfits = fits > offsetof(rnnd_key, digest) ? fits - offsetof(rnnd_key, digest) : 0;
        if (dfits > 32)
            dfits = 32;
        memcpy(k + offsetof(rnnd_key, digest), d, dfits);
        if (i > 0 && dfits > 0)
            k[offsetof(rnnd_key, digest)] ^= 0xff;
    }
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* the expected fault is no error: keep a sanitizer's report of it out of the log */
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0)
            dup2(null, 2);
        rnnd_auth a = {.keys = keys, .n = n};
        _exit(rnnd_auth_check(&a, HEADER) == &keys[0] ? 0 : 2);
    }
    int st = 0;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    munmap(p, 2 * page);
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

START_TEST(test_no_early_exit)
{
    const long align = (long)_Alignof(rnnd_key), off = (long)offsetof(rnnd_key, digest);
    /* the page may start only where a key's alignment lets it: at the end of the last key,
     * at most align - 1 bytes before its digest, and somewhere in the digest's last bytes */
    const long whole = (long)sizeof(rnnd_key) - off;
    const long none = -(off % align);
    const long tail = (off + 31) / align * align - off;
    ck_assert(tail > 0 && tail < 32);
    /* control: the last key wholly readable */
    ck_assert_msg(probe(1, whole), "a check of one readable key did not return normally");
    ck_assert_msg(probe(3, whole), "a check of three readable keys did not return normally");
    /* the last key's digest unreadable: the match is key 0, yet the check reaches it */
    ck_assert_msg(!probe(3, none), "the check stopped before the last key's digest");
    ck_assert_msg(!probe(2, none), "the check stopped before the last key's digest");
    /* only the last bytes of a digest that differs in its first byte are unreadable */
    ck_assert_msg(!probe(2, tail),
                  "the check did not read a non-matching digest to its end "
                  "(bytes %ld to 31 unread)",
                  tail);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("auth");
    TCase *tc = tcase_create("auth");
    tcase_add_test(tc, test_every_byte);
    tcase_add_test(tc, test_no_early_exit);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
