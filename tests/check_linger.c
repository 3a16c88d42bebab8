/* The lingering close (src/linger.c): each case hands one end of a socketpair to a lingerer
 * with small bounds and watches, from the other end, when the socket closes: when the client
 * closes, after the byte bound, after the idle bound, after the total time, at once when full,
 * and on free. Timings have wide upper margins: the machine may be loaded. */
#include "config.h"

#include <check.h>
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "linger.h"
#include "rnnd/status.h"

static rnnd_linger *start(double time_s, double idle_s, uint64_t bytes, size_t max)
{
    rnnd_linger_limits lim = {.time_s = time_s, .idle_s = idle_s, .bytes = bytes};
    rnnd_linger *l = NULL;
    char err[256] = "";
    ck_assert_int_eq(rnnd_linger_new(&lim, max, max, &l, err, sizeof err), RNND_OK);
    ck_assert_ptr_nonnull(l);
    return l;
}

/* A socketpair: [0] for the lingerer, [1] the client's end. */
static void pair(int sv[2]) { ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0); }

/* Seconds until the lingerer closes its end, seen from the client's end FD (the end of the
 * stream); -1 when it does not within LIMIT_S. */
static double wait_closed(int fd, double limit_s)
{
    double t0 = rnnd_mono_s();
    char buf[4096];
    for (;;) {
        double left = limit_s - (rnnd_mono_s() - t0);
        if (left <= 0)
            return -1;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, (int)(left * 1e3) + 1) <= 0)
            continue;
        ssize_t k = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR))
            return rnnd_mono_s() - t0;
    }
}

/* Counts lingering sockets until none is left or LIMIT_S passes. */
static size_t settle(rnnd_linger *l, double limit_s)
{
    double t0 = rnnd_mono_s();
    while (rnnd_linger_count(l) && rnnd_mono_s() - t0 < limit_s)
        usleep(10000);
    return rnnd_linger_count(l);
}

static struct sockaddr_storage addr_of(const char *text)
{
    struct sockaddr_storage a;
    memset(&a, 0, sizeof a);
    if (strchr(text, ':')) {
        struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&a;
        v6->sin6_family = AF_INET6;
        ck_assert_int_eq(inet_pton(AF_INET6, text, &v6->sin6_addr), 1);
    } else {
        struct sockaddr_in *v4 = (struct sockaddr_in *)&a;
        v4->sin_family = AF_INET;
        ck_assert_int_eq(inet_pton(AF_INET, text, &v4->sin_addr), 1);
    }
    return a;
}

static int same(const char *x, const char *y)
{
    struct sockaddr_storage a = addr_of(x), b = addr_of(y);
    return rnnd_same_host(&a, (const struct sockaddr *)&b);
}

/* One IPv6 host usually holds a whole /64 (SLAAC, privacy addresses), so an address per
 * connection must not buy a connection limit per address; IPv4, and IPv4 mapped into IPv6,
 * stay one address each. */
START_TEST(ipv6_hosts_are_their_64)
{
    ck_assert(same("2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:fffe"));
    ck_assert(same("2001:db8:1:2::1", "2001:db8:1:2::1"));
    ck_assert(!same("2001:db8:1:2::1", "2001:db8:1:3::1"));
    ck_assert(!same("2001:db8:1:2::1", "2001:db9:1:2::1"));
    ck_assert(same("::1", "::1"));
    ck_assert(!same("::ffff:192.0.2.1", "::ffff:192.0.2.2"));
    ck_assert(same("::ffff:192.0.2.1", "::ffff:192.0.2.1"));
    ck_assert(same("192.0.2.1", "192.0.2.1"));
    ck_assert(!same("192.0.2.1", "192.0.2.2"));
    ck_assert(!same("192.0.2.1", "::ffff:192.0.2.1"));
}
END_TEST

START_TEST(defaults_follow_nginx)
{
    rnnd_linger_limits lim;
    rnnd_linger_limits_default(&lim, 16u << 20, 30);
    ck_assert(lim.time_s == 30 && lim.idle_s == 5);
    ck_assert_uint_eq(lim.bytes, 64u << 20);
    rnnd_linger_limits_default(&lim, 1u << 30, 2); /* a shorter request timeout wins */
    ck_assert(lim.idle_s == 2);
    ck_assert_uint_eq(lim.bytes, 1u << 30); /* never less than max_body_bytes */
}
END_TEST

START_TEST(spent_at_each_bound)
{
    rnnd_linger_limits lim = {.time_s = 30, .idle_s = 5, .bytes = 1000};
    ck_assert_int_eq(rnnd_linger_spent(&lim, 29.9, 4.9, 1000), 0);
    ck_assert_int_eq(rnnd_linger_spent(&lim, 30, 0, 0), 1);
    ck_assert_int_eq(rnnd_linger_spent(&lim, 0, 5, 0), 1);
    ck_assert_int_eq(rnnd_linger_spent(&lim, 0, 0, 1001), 1);
}
END_TEST

START_TEST(closes_when_the_client_does)
{
    rnnd_linger *l = start(30, 30, 1 << 20, 4);
    int sv[2];
    pair(sv);
    ck_assert_int_eq(rnnd_linger_add(l, sv[0]), RNND_OK);
    ck_assert_uint_eq(rnnd_linger_count(l), 1);
    char buf[1000];
    memset(buf, 'x', sizeof buf);
    ck_assert_int_eq(send(sv[1], buf, sizeof buf, 0), (ssize_t)sizeof buf);
    shutdown(sv[1], SHUT_WR);
    ck_assert_uint_eq(settle(l, 5), 0);
    close(sv[1]);
    rnnd_linger_free(l);
}
END_TEST

START_TEST(cut_after_the_byte_bound)
{
    const uint64_t bound = 256 << 10;
    rnnd_linger *l = start(30, 30, bound, 4);
    int sv[2];
    pair(sv);
    int sndbuf = 0;
    socklen_t len = sizeof sndbuf;
    getsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &sndbuf, &len);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(sv[1], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    ck_assert_int_eq(rnnd_linger_add(l, sv[0]), RNND_OK);
    static char buf[16384];
    uint64_t sent = 0;
    int e = 0;
    while (sent < 64 * bound) {
        ssize_t k = send(sv[1], buf, sizeof buf, MSG_NOSIGNAL);
        if (k < 0) {
            e = errno;
            break;
        }
        sent += (uint64_t)k;
    }
    ck_assert_msg(e == EPIPE || e == ECONNRESET, "sending went on: %llu bytes, errno %d",
                  (unsigned long long)sent, e);
    /* all it read was dropped; what it had not read yet sat in the socket's buffers */
    ck_assert_uint_ge(sent, bound);
    ck_assert_uint_le(sent, bound + 4 * (uint64_t)sndbuf + (1 << 20));
    ck_assert_uint_eq(settle(l, 5), 0);
    close(sv[1]);
    rnnd_linger_free(l);
}
END_TEST

START_TEST(closed_after_the_idle_bound)
{
    rnnd_linger *l = start(30, 0.3, 1 << 20, 4);
    int sv[2];
    pair(sv);
    ck_assert_int_eq(rnnd_linger_add(l, sv[0]), RNND_OK);
    double secs = wait_closed(sv[1], 10);
    ck_assert_msg(secs >= 0.25 && secs < 5, "closed after %.3f s, want 0.3", secs);
    close(sv[1]);
    rnnd_linger_free(l);
}
END_TEST

START_TEST(closed_after_the_total_time)
{
    rnnd_linger *l = start(0.6, 5, 1 << 20, 4);
    int sv[2];
    pair(sv);
    ck_assert_int_eq(rnnd_linger_add(l, sv[0]), RNND_OK);
    double t0 = rnnd_mono_s(), secs = -1;
    while (rnnd_mono_s() - t0 < 10) { /* a trickle: never idle, never near the byte bound */
        if (send(sv[1], "x", 1, MSG_NOSIGNAL) != 1 || wait_closed(sv[1], 0.05) >= 0) {
            secs = rnnd_mono_s() - t0;
            break;
        }
    }
    ck_assert_msg(secs >= 0.55 && secs < 5, "closed after %.3f s, want 0.6", secs);
    close(sv[1]);
    rnnd_linger_free(l);
}
END_TEST

START_TEST(full_closes_at_once)
{
    rnnd_linger *l = start(30, 30, 1 << 20, 1);
    int a[2], b[2];
    pair(a);
    pair(b);
    ck_assert_int_eq(rnnd_linger_add(l, a[0]), RNND_OK);
    ck_assert_int_eq(rnnd_linger_add(l, b[0]), RNND_ERR_LIMIT);
    ck_assert_uint_eq(rnnd_linger_count(l), 1);
    double secs = wait_closed(b[1], 5);
    ck_assert_msg(secs >= 0 && secs < 1, "the refused socket closed after %.3f s", secs);
    ck_assert_msg(wait_closed(a[1], 0.3) < 0, "the first socket still lingers");
    close(a[1]);
    close(b[1]);
    rnnd_linger_free(l);
}
END_TEST

START_TEST(free_closes_every_socket)
{
    rnnd_linger *l = start(30, 30, 1 << 20, 8);
    int sv[3][2];
    for (int i = 0; i < 3; i++) {
        pair(sv[i]);
        ck_assert_int_eq(rnnd_linger_add(l, sv[i][0]), RNND_OK);
    }
    rnnd_linger_free(l);
    for (int i = 0; i < 3; i++) {
        ck_assert_msg(wait_closed(sv[i][1], 5) >= 0, "socket %d closed on free", i);
        close(sv[i][1]);
    }
}
END_TEST

/* Several clients at once, each sending 1 MiB then closing: every byte is read (the clients'
 * sends all complete) and every socket is closed. */
START_TEST(many_at_once)
{
    enum { N = 8 };
    rnnd_linger *l = start(30, 30, 4 << 20, N);
    int sv[N][2];
    for (int i = 0; i < N; i++) {
        pair(sv[i]);
        struct timeval tv = {.tv_sec = 10};
        setsockopt(sv[i][1], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        ck_assert_int_eq(rnnd_linger_add(l, sv[i][0]), RNND_OK);
    }
    static char buf[65536];
    for (int round = 0; round < 16; round++)
        for (int i = 0; i < N; i++)
            ck_assert_int_eq(send(sv[i][1], buf, sizeof buf, MSG_NOSIGNAL), (ssize_t)sizeof buf);
    for (int i = 0; i < N; i++)
        shutdown(sv[i][1], SHUT_WR);
    ck_assert_uint_eq(settle(l, 10), 0);
    for (int i = 0; i < N; i++)
        close(sv[i][1]);
    rnnd_linger_free(l);
}
END_TEST

/* One host (a Unix socketpair's peers are all one) gets PER_ADDR sockets; the next is closed
 * at once although the total has room. */
START_TEST(per_host_bound)
{
    rnnd_linger_limits lim = {.time_s = 30, .idle_s = 30, .bytes = 1 << 20};
    rnnd_linger *l = NULL;
    char err[256] = "";
    ck_assert_int_eq(rnnd_linger_new(&lim, 8, 2, &l, err, sizeof err), RNND_OK);
    int sv[3][2];
    for (int i = 0; i < 3; i++)
        pair(sv[i]);
    ck_assert_int_eq(rnnd_linger_add(l, sv[0][0]), RNND_OK);
    ck_assert_int_eq(rnnd_linger_add(l, sv[1][0]), RNND_OK);
    ck_assert_int_eq(rnnd_linger_add(l, sv[2][0]), RNND_ERR_LIMIT);
    ck_assert_uint_eq(rnnd_linger_count(l), 2);
    double secs = wait_closed(sv[2][1], 5);
    ck_assert_msg(secs >= 0 && secs < 1, "the refused socket closed after %.3f s", secs);
    for (int i = 0; i < 3; i++)
        close(sv[i][1]);
    rnnd_linger_free(l);
}
END_TEST

/* The arithmetic of docs/security.md, "Descriptors". */
START_TEST(budget_shares_the_limit)
{
    rnnd_fd_budget b;
    char err[256] = "";
    /* room: max_connections kept, a quarter to linger, a quarter of per-ip per address */
    ck_assert_int_eq(rnnd_fd_budget_plan(65536, 60, 1024, 128, &b, err, sizeof err), RNND_OK);
    ck_assert_uint_eq(b.need, 60 + 1024 + 256);
    ck_assert_uint_eq(b.connections, 1024);
    ck_assert_uint_eq(b.linger, 256);
    ck_assert_uint_eq(b.linger_per_addr, 32);
    /* 256 descriptors, 50 the daemon's: 164 connections, 41 lingering, 10 per address */
    ck_assert_int_eq(rnnd_fd_budget_plan(256, 50, 1024, 128, &b, err, sizeof err), RNND_OK);
    ck_assert_uint_eq(b.connections, 164);
    ck_assert_uint_eq(b.linger, 41);
    ck_assert_uint_eq(b.linger_per_addr, 10);
    ck_assert_uint_le(50 + b.connections + b.linger, 256);
    /* a tiny per-address limit still lets one socket linger */
    ck_assert_int_eq(rnnd_fd_budget_plan(256, 50, 40, 2, &b, err, sizeof err), RNND_OK);
    ck_assert_uint_eq(b.linger_per_addr, 1);
    /* under RNND_FD_MIN_CONNECTIONS: refused, naming the limit */
    ck_assert_int_eq(rnnd_fd_budget_plan(55, 50, 1024, 128, &b, err, sizeof err), RNND_ERR_LIMIT);
    ck_assert_ptr_nonnull(strstr(err, "RLIMIT_NOFILE is 55"));
    ck_assert_int_eq(rnnd_fd_budget_plan(20, 50, 1024, 128, &b, err, sizeof err), RNND_ERR_LIMIT);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("linger");
    TCase *tc = tcase_create("linger");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, defaults_follow_nginx);
    tcase_add_test(tc, ipv6_hosts_are_their_64);
    tcase_add_test(tc, spent_at_each_bound);
    tcase_add_test(tc, closes_when_the_client_does);
    tcase_add_test(tc, cut_after_the_byte_bound);
    tcase_add_test(tc, closed_after_the_idle_bound);
    tcase_add_test(tc, closed_after_the_total_time);
    tcase_add_test(tc, full_closes_at_once);
    tcase_add_test(tc, free_closes_every_socket);
    tcase_add_test(tc, many_at_once);
    tcase_add_test(tc, per_host_bound);
    tcase_add_test(tc, budget_shares_the_limit);
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
