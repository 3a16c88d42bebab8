/* The settings table: defaults, bounds, sizes, enums, conf files, flags, help, and that
 * conf/rnnd.conf documents every key with its true default. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "settings.h"
#include "rnnd/status.h"

static char *tmpfile_with(const char *text)
{
    static char path[256];
    const char *dir = getenv("RNND_TEST_TMP");
    snprintf(path, sizeof path, "%s/check_config_XXXXXX", dir && *dir ? dir : "/tmp");
    if (dir && *dir) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
        ck_assert_int_eq(system(cmd), 0);
    }
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    FILE *f = fdopen(fd, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

static char *print_config(const rnnd_config *c)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    rnnd_config_print(c, f);
    fclose(f);
    return buf;
}

START_TEST(test_defaults)
{
    rnnd_config c;
    ck_assert_int_eq(rnnd_config_init(&c), 0);
    ck_assert_str_eq(c.listen, "127.0.0.1:8080");
    ck_assert_str_eq(c.models, "");
    ck_assert_uint_eq(c.n_model, 0);
    ck_assert_int_eq(c.max_batch, 64);
    ck_assert_int_eq(c.max_body_bytes, 16 * 1024 * 1024);
    ck_assert_int_eq(c.max_state_bytes, 1024LL * 1024 * 1024);
    ck_assert_int_eq(c.session_ttl_s, 600);
    ck_assert_int_eq(c.session_evict, RNND_EVICT_REJECT);
    ck_assert_int_eq(c.workers, 0);
    ck_assert_str_eq(c.snapshot_key_file, ""); /* state_dir + ".key" (snapkey.h) */
    rnnd_config_free(&c);
}
END_TEST

START_TEST(test_set)
{
    rnnd_config c;
    char err[256];
    rnnd_config_init(&c);
    ck_assert_int_eq(rnnd_config_set(&c, "max_batch", "7", err, sizeof err), 0);
    ck_assert_int_eq(c.max_batch, 7);
    ck_assert_int_eq(rnnd_config_set(&c, "max-batch", "9", err, sizeof err), 0);
    ck_assert_int_eq(c.max_batch, 9);
    ck_assert_int_eq(rnnd_config_set(&c, "max_batch", "0", err, sizeof err), RNND_ERR_INVALID);
    ck_assert(strstr(err, "max_batch") && strstr(err, "1..4096"));
    ck_assert_int_eq(rnnd_config_set(&c, "max_batch", "5000", err, sizeof err), RNND_ERR_INVALID);
    ck_assert_int_eq(rnnd_config_set(&c, "max_batch", "12x", err, sizeof err), RNND_ERR_INVALID);
    ck_assert_int_eq(rnnd_config_set(&c, "max_batch", "", err, sizeof err), RNND_ERR_INVALID);
    ck_assert_int_eq(rnnd_config_set(&c, "max_batch", "99999999999999999999999", err, sizeof err),
                     RNND_ERR_INVALID);
    ck_assert_int_eq(c.max_batch, 9); /* failed sets change nothing */
    ck_assert_int_eq(rnnd_config_set(&c, "max_body_bytes", "2K", err, sizeof err), 0);
    ck_assert_int_eq(c.max_body_bytes, 2048);
    ck_assert_int_eq(rnnd_config_set(&c, "max_body_bytes", "3mb", err, sizeof err), 0);
    ck_assert_int_eq(c.max_body_bytes, 3 * 1024 * 1024);
    ck_assert_int_eq(rnnd_config_set(&c, "max_body_bytes", "5000", err, sizeof err), 0);
    ck_assert_int_eq(c.max_body_bytes, 5000);
    ck_assert_int_eq(rnnd_config_set(&c, "max_body_bytes", "2T", err, sizeof err),
                     RNND_ERR_INVALID);
    ck_assert_int_eq(rnnd_config_set(&c, "max_body_bytes", "2G", err, sizeof err),
                     RNND_ERR_INVALID); /* above 1G */
    ck_assert_int_eq(rnnd_config_set(&c, "session_evict", "lru", err, sizeof err), 0);
    ck_assert_int_eq(c.session_evict, RNND_EVICT_LRU);
    ck_assert_int_eq(rnnd_config_set(&c, "session_evict", "random", err, sizeof err),
                     RNND_ERR_INVALID);
    ck_assert(strstr(err, "reject, lru"));
    ck_assert_int_eq(rnnd_config_set(&c, "no_such_key", "1", err, sizeof err), RNND_ERR_INVALID);
    ck_assert(strstr(err, "no_such_key"));
    ck_assert_int_eq(rnnd_config_set(&c, "model", "a=/x/a.rnnd", err, sizeof err), 0);
    ck_assert_int_eq(rnnd_config_set(&c, "model", "b=/x/b.rnnd", err, sizeof err), 0);
    ck_assert_int_eq(rnnd_config_set(&c, "model", "nofile", err, sizeof err), RNND_ERR_INVALID);
    ck_assert_int_eq(rnnd_config_set(&c, "model", "=x", err, sizeof err), RNND_ERR_INVALID);
    ck_assert_uint_eq(c.n_model, 2);
    ck_assert_str_eq(c.model[1], "b=/x/b.rnnd");
    ck_assert_int_eq(rnnd_config_set(&c, "snapshot-key-file", "/k/snap.key", err, sizeof err), 0);
    ck_assert_str_eq(c.snapshot_key_file, "/k/snap.key");
    rnnd_config_free(&c);
}
END_TEST

START_TEST(test_file)
{
    rnnd_config c;
    char err[512];
    rnnd_config_init(&c);
    char *p = tmpfile_with("# a comment\n\n  listen = 0.0.0.0:9000  \nmax_batch=3\n"
                           "model = m=/tmp/m.rnnd\n");
    ck_assert_int_eq(rnnd_config_load_file(&c, p, err, sizeof err), 0);
    ck_assert_str_eq(c.listen, "0.0.0.0:9000");
    ck_assert_int_eq(c.max_batch, 3);
    ck_assert_str_eq(c.model[0], "m=/tmp/m.rnnd");
    remove(p);
    p = tmpfile_with("max_batch = 3\n\nbogus line\n");
    ck_assert_int_eq(rnnd_config_load_file(&c, p, err, sizeof err), RNND_ERR_INVALID);
    ck_assert(strstr(err, ":3: expected key = value"));
    remove(p);
    /* only whole lines are comments (conf/rnnd.conf says so): a '#' after a value is kept */
    p = tmpfile_with("  # an indented comment\nlisten = 127.0.0.1:1 # here\n");
    ck_assert_int_eq(rnnd_config_load_file(&c, p, err, sizeof err), 0);
    ck_assert_str_eq(c.listen, "127.0.0.1:1 # here");
    remove(p);
    p = tmpfile_with("max_batch = 3 # three\n");
    ck_assert_int_eq(rnnd_config_load_file(&c, p, err, sizeof err), RNND_ERR_INVALID);
    ck_assert(strstr(err, ":1: max_batch"));
    remove(p);
    p = tmpfile_with("workers = -1\n");
    ck_assert_int_eq(rnnd_config_load_file(&c, p, err, sizeof err), RNND_ERR_INVALID);
    ck_assert(strstr(err, ":1: workers"));
    remove(p);
    ck_assert_int_eq(rnnd_config_load_file(&c, "/nonexistent/rnnd.conf", err, sizeof err),
                     RNND_ERR_IO);
    rnnd_config_free(&c);
}
END_TEST

START_TEST(test_args)
{
    rnnd_config c;
    char err[512];
    int action;
    char *p = tmpfile_with("max_batch = 3\nworkers = 2\n");
    char cfgarg[300];
    snprintf(cfgarg, sizeof cfgarg, "--config=%s", p);
    /* flags override the file whatever their order */
    char *argv1[] = {"serve",    "--max-batch",      "5",        cfgarg,        "--model",
                     "a=x.rnnd", "--model=b=y.rnnd", "--listen", "127.0.0.1:0", NULL};
    rnnd_config_init(&c);
    ck_assert_int_eq(rnnd_config_from_args(&c, 9, argv1, &action, err, sizeof err), 0);
    ck_assert_int_eq(action, RNND_CONFIG_RUN);
    ck_assert_int_eq(c.max_batch, 5);
    ck_assert_int_eq(c.workers, 2);
    ck_assert_uint_eq(c.n_model, 2);
    ck_assert_str_eq(c.model[1], "b=y.rnnd");
    ck_assert_str_eq(c.listen, "127.0.0.1:0");
    rnnd_config_free(&c);

    char *argv2[] = {"serve", "--max-batch", NULL};
    rnnd_config_init(&c);
    ck_assert_int_eq(rnnd_config_from_args(&c, 2, argv2, &action, err, sizeof err),
                     RNND_ERR_INVALID);
    ck_assert(strstr(err, "needs a value"));
    char *argv3[] = {"serve", "--frobnicate", "1", NULL};
    ck_assert_int_eq(rnnd_config_from_args(&c, 3, argv3, &action, err, sizeof err),
                     RNND_ERR_INVALID);
    ck_assert(strstr(err, "--frobnicate"));
    char *argv4[] = {"serve", "stray", NULL};
    ck_assert_int_eq(rnnd_config_from_args(&c, 2, argv4, &action, err, sizeof err),
                     RNND_ERR_INVALID);
    char *argv5[] = {"serve", "--max-batch", "2", "--help", NULL};
    ck_assert_int_eq(rnnd_config_from_args(&c, 4, argv5, &action, err, sizeof err), 0);
    ck_assert_int_eq(action, RNND_CONFIG_HELP);
    char *argv7[] = {"serve", "--session-ttl-s", "100", "--session-ttl-max-s", "99", NULL};
    ck_assert_int_eq(rnnd_config_from_args(&c, 5, argv7, &action, err, sizeof err),
                     RNND_ERR_INVALID);
    ck_assert(strstr(err, "session_ttl_max_s"));
    char *argv6[] = {"serve", "--config", "/nonexistent.conf", NULL};
    ck_assert_int_ne(rnnd_config_from_args(&c, 3, argv6, &action, err, sizeof err), 0);
    ck_assert(strstr(err, "/nonexistent.conf"));
    rnnd_config_free(&c);
    remove(p);
}
END_TEST

START_TEST(test_help_and_print)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    rnnd_config_help(f);
    fclose(f);
    /* undo the word wrapping: every newline and its indentation becomes one space */
    char *w = buf;
    for (char *q = buf; *q; q++) {
        if (*q == '\n') {
            while (q[1] == ' ')
                q++;
            *w++ = ' ';
        } else {
            *w++ = *q;
        }
    }
    *w = '\0';
    for (size_t i = 0; i < rnnd_config_count(); i++) {
        char flag[80];
        snprintf(flag, sizeof flag, "--%s ", rnnd_config_key(i));
        for (char *q = flag + 2; *q; q++)
            if (*q == '_')
                *q = '-';
        ck_assert_msg(strstr(buf, flag), "help lacks %s", flag);
        char key[160];
        snprintf(key, sizeof key, "(key %s, default \"%s\"", rnnd_config_key(i),
                 rnnd_config_default(i));
        ck_assert_msg(strstr(buf, key), "help lacks %s", key);
    }
    free(buf);

    /* print -> load -> print is a fixed point, and keeps non-default values */
    rnnd_config a, b;
    char err[512];
    rnnd_config_init(&a);
    rnnd_config_set(&a, "max_state_bytes", "3M", err, sizeof err);
    rnnd_config_set(&a, "model", "m=/a/b.rnnd", err, sizeof err);
    rnnd_config_set(&a, "session_evict", "lru", err, sizeof err);
    char *pa = print_config(&a);
    char *p = tmpfile_with(pa);
    rnnd_config_init(&b);
    ck_assert_int_eq(rnnd_config_load_file(&b, p, err, sizeof err), 0);
    char *pb = print_config(&b);
    ck_assert_str_eq(pa, pb);
    ck_assert_int_eq(b.max_state_bytes, 3 * 1024 * 1024);
    ck_assert_int_eq(b.session_evict, RNND_EVICT_LRU);
    free(pa);
    free(pb);
    remove(p);
    rnnd_config_free(&a);
    rnnd_config_free(&b);
}
END_TEST

/* conf/rnnd.conf: every key once as "# key = DEFAULT", exactly the table's default, and the
 * file as shipped (all commented) leaves every setting at its default. */
START_TEST(test_shipped_conf)
{
    const char *src = getenv("RNND_SRCDIR");
    ck_assert_msg(src != NULL, "RNND_SRCDIR not set");
    char path[1024];
    snprintf(path, sizeof path, "%s/conf/rnnd.conf", src);
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    char line[1024];
    int found[64] = {0};
    ck_assert_uint_le(rnnd_config_count(), 64);
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        for (size_t i = 0; i < rnnd_config_count(); i++) {
            char want[512];
            snprintf(want, sizeof want, "# %s = %s", rnnd_config_key(i), rnnd_config_default(i));
            char prefix[128];
            snprintf(prefix, sizeof prefix, "# %s =", rnnd_config_key(i));
            if (!strncmp(line, prefix, strlen(prefix))) {
                /* the trailing space of an empty default may be trimmed by editors */
                size_t n = strlen(want);
                while (n && want[n - 1] == ' ')
                    want[--n] = '\0';
                ck_assert_msg(!strcmp(line, want), "%s: \"%s\" should be \"%s\"", path, line, want);
                found[i]++;
            }
        }
    }
    fclose(f);
    for (size_t i = 0; i < rnnd_config_count(); i++)
        ck_assert_msg(found[i] == 1, "%s documents %s %d times", path, rnnd_config_key(i),
                      found[i]);
    rnnd_config a, b;
    char err[512];
    rnnd_config_init(&a);
    rnnd_config_init(&b);
    ck_assert_int_eq(rnnd_config_load_file(&b, path, err, sizeof err), 0);
    char *pa = print_config(&a), *pb = print_config(&b);
    ck_assert_str_eq(pa, pb);
    free(pa);
    free(pb);
    rnnd_config_free(&a);
    rnnd_config_free(&b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("config");
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_set);
    tcase_add_test(tc, test_file);
    tcase_add_test(tc, test_args);
    tcase_add_test(tc, test_help_and_print);
    tcase_add_test(tc, test_shipped_conf);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
