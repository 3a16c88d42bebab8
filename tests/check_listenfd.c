/* rnnd_listen_fd (src/listenfd.c): the sd_listen_fds protocol. Each case puts real sockets at
 * fd 3 (and 4), sets LISTEN_PID / LISTEN_FDS as systemd would, calls the function, and puts
 * back whatever fds 3 and 4 were before (Check's own files may live there) before asserting. */
#include "config.h"

#include <check.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "listenfd.h"
#include "rnnd/status.h"

typedef struct result {
    int rc, fd;
    char err[512];
    int cloexec;            /* fd 3 had FD_CLOEXEC after the call */
    int env_left;           /* any LISTEN_* variable still set */
    int again_rc, again_fd; /* a second call */
} result;

/* A socket of TYPE (AF_INET on 127.0.0.1 port 0, or AF_UNIX abstract), bound, and listening
 * when LISTEN is set. */
static int make_socket(int family, int type, int listening)
{
    int s = socket(family, type, 0);
    ck_assert_int_ge(s, 0);
    if (family == AF_INET) {
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = 0,
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        ck_assert_int_eq(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    } else {
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        snprintf(a.sun_path + 1, sizeof a.sun_path - 1, "rnnd-check-listenfd-%d", getpid());
        ck_assert_int_eq(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    }
    if (listening)
        ck_assert_int_eq(listen(s, 8), 0);
    return s;
}

/* Place FDS[0..N) at 3.., set the variables (PID: LISTEN_PID text, NULL = this process;
 * COUNT: LISTEN_FDS text, NULL = N), call, restore fds 3 and 4, close what was placed. */
static result run_case(const int *fds, int n, const char *pid, const char *count)
{
    result r;
    memset(&r, 0, sizeof r);
    int saved[2];
    for (int k = 0; k < 2; k++)
        saved[k] = fcntl(3 + k, F_DUPFD_CLOEXEC, 100);
    for (int k = 0; k < n; k++)
        dup2(fds[k], 3 + k);
    for (int k = n; k < 2; k++)
        close(3 + k);
    char buf[32];
    snprintf(buf, sizeof buf, "%d", (int)getpid());
    setenv("LISTEN_PID", pid ? pid : buf, 1);
    snprintf(buf, sizeof buf, "%d", n);
    setenv("LISTEN_FDS", count ? count : buf, 1);
    setenv("LISTEN_FDNAMES", "web", 1);

    r.rc = rnnd_listen_fd(&r.fd, r.err, sizeof r.err);
    int flags = fcntl(3, F_GETFD);
    r.cloexec = flags >= 0 && (flags & FD_CLOEXEC);
    r.env_left = getenv("LISTEN_PID") || getenv("LISTEN_FDS") || getenv("LISTEN_FDNAMES");
    char err2[64];
    r.again_rc = rnnd_listen_fd(&r.again_fd, err2, sizeof err2);

    for (int k = 0; k < 2; k++) {
        if (saved[k] >= 0) {
            dup2(saved[k], 3 + k);
            close(saved[k]);
        } else {
            close(3 + k);
        }
    }
    for (int k = 0; k < n; k++)
        close(fds[k]);
    return r;
}

static void assert_refused(const result *r, const char *why)
{
    ck_assert_int_eq(r->rc, RNND_ERR_INVALID);
    ck_assert_int_eq(r->fd, -1);
    ck_assert_msg(strstr(r->err, why) != NULL, "error \"%s\" lacks \"%s\"", r->err, why);
    ck_assert_int_eq(r->env_left, 0);
}

START_TEST(tcp_listening)
{
    int s = make_socket(AF_INET, SOCK_STREAM, 1);
    result r = run_case(&s, 1, NULL, NULL);
    ck_assert_msg(r.rc == RNND_OK, "rc %d: %s", r.rc, r.err);
    ck_assert_int_eq(r.fd, 3);
    ck_assert_int_eq(r.cloexec, 1);
    ck_assert_int_eq(r.env_left, 0);
    /* the variables are gone: a second call finds nothing */
    ck_assert_int_eq(r.again_rc, RNND_OK);
    ck_assert_int_eq(r.again_fd, -1);
}
END_TEST

START_TEST(unix_listening)
{
    int s = make_socket(AF_UNIX, SOCK_STREAM, 1);
    result r = run_case(&s, 1, NULL, NULL);
    ck_assert_msg(r.rc == RNND_OK, "rc %d: %s", r.rc, r.err);
    ck_assert_int_eq(r.fd, 3);
}
END_TEST

START_TEST(none_passed)
{
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    int fd = 42;
    char err[64] = "";
    ck_assert_int_eq(rnnd_listen_fd(&fd, err, sizeof err), RNND_OK);
    ck_assert_int_eq(fd, -1);
}
END_TEST

START_TEST(other_pid)
{
    /* meant for another process (e.g. a parent that did not unset them): not ours */
    char pid[32];
    snprintf(pid, sizeof pid, "%d", (int)getpid() + 1);
    int s = make_socket(AF_INET, SOCK_STREAM, 1);
    result r = run_case(&s, 1, pid, NULL);
    ck_assert_int_eq(r.rc, RNND_OK);
    ck_assert_int_eq(r.fd, -1);
    ck_assert_int_eq(r.env_left, 0);
}
END_TEST

START_TEST(two_sockets)
{
    int s[2] = {make_socket(AF_INET, SOCK_STREAM, 1), make_socket(AF_INET, SOCK_STREAM, 1)};
    result r = run_case(s, 2, NULL, NULL);
    assert_refused(&r, "exactly one");
}
END_TEST

START_TEST(not_listening)
{
    int s = make_socket(AF_INET, SOCK_STREAM, 0);
    result r = run_case(&s, 1, NULL, NULL);
    assert_refused(&r, "not listening");
}
END_TEST

START_TEST(datagram)
{
    int s = make_socket(AF_INET, SOCK_DGRAM, 0);
    result r = run_case(&s, 1, NULL, NULL);
    assert_refused(&r, "not a stream socket");
}
END_TEST

START_TEST(not_a_socket)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    result r = run_case(&p[0], 1, NULL, NULL);
    close(p[1]);
    assert_refused(&r, "not a socket");
}
END_TEST

START_TEST(nothing_at_fd3)
{
    result r = run_case(NULL, 0, NULL, "1");
    ck_assert_int_eq(r.rc, RNND_ERR_INVALID);
    ck_assert_int_eq(r.fd, -1);
    ck_assert_msg(strstr(r.err, "socket activation") != NULL, "error \"%s\"", r.err);
}
END_TEST

START_TEST(malformed)
{
    static const char *const pids[] = {"12x", "", "-1", "99999999999999999999999"};
    for (size_t i = 0; i < sizeof pids / sizeof pids[0]; i++) {
        int s = make_socket(AF_INET, SOCK_STREAM, 1);
        result r = run_case(&s, 1, pids[i], NULL);
        ck_assert_msg(r.rc == RNND_ERR_INVALID || (r.rc == RNND_OK && r.fd == -1),
                      "LISTEN_PID=\"%s\": rc %d fd %d", pids[i], r.rc, r.fd);
        ck_assert_int_eq(r.env_left, 0);
    }
    /* LISTEN_FDS must be a count of at least 1 (sd_listen_fds refuses 0 too) */
    static const char *const counts[] = {"one", "0", "-1", ""};
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        int s = make_socket(AF_INET, SOCK_STREAM, 1);
        result r = run_case(&s, 1, NULL, counts[i]);
        assert_refused(&r, "socket activation");
    }
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("listenfd");
    TCase *tc = tcase_create("protocol");
    tcase_add_test(tc, tcp_listening);
    tcase_add_test(tc, unix_listening);
    tcase_add_test(tc, none_passed);
    tcase_add_test(tc, other_pid);
    tcase_add_test(tc, two_sockets);
    tcase_add_test(tc, not_listening);
    tcase_add_test(tc, datagram);
    tcase_add_test(tc, not_a_socket);
    tcase_add_test(tc, nothing_at_fd3);
    tcase_add_test(tc, malformed);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
