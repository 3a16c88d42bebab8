/* src/notify.c: the datagrams each call sends to $NOTIFY_SOCKET (a socket this test binds, as
 * systemd would), the watchdog interval read from $WATCHDOG_USEC/$WATCHDOG_PID, and, in a
 * build without libsystemd, that every call is a silent no-op. */
#include "config.h"

#include <check.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "notify.h"
#include "rnnd/status.h"

/* A datagram socket with an abstract name, named in $NOTIFY_SOCKET ("@name"). */
static int listener(void)
{
    int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(s, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    int n = snprintf(a.sun_path + 1, sizeof a.sun_path - 1, "rnnd-check-notify-%d", (int)getpid());
    ck_assert_int_eq(bind(s, (struct sockaddr *)&a,
                          (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n)),
                     0);
    char env[128];
    snprintf(env, sizeof env, "@%s", a.sun_path + 1);
    setenv("NOTIFY_SOCKET", env, 1);
    return s;
}

static int nothing_waiting(int s)
{
    struct pollfd p = {.fd = s, .events = POLLIN};
    return poll(&p, 1, 200) == 0;
}

#ifdef HAVE_LIBSYSTEMD

/* The next datagram within 2 s into BUF (NUL-terminated); its length, or -1 when none. */
static int receive(int s, char *buf, size_t len)
{
    struct pollfd p = {.fd = s, .events = POLLIN};
    if (poll(&p, 1, 2000) != 1)
        return -1;
    ssize_t n = recv(s, buf, len - 1, 0);
    if (n < 0)
        return -1;
    buf[n] = '\0';
    return (int)n;
}

static uint64_t monotonic_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

START_TEST(messages)
{
    int s = listener();
    char buf[1024];
    ck_assert_int_eq(rnnd_notify_ready(NULL), RNND_OK);
    ck_assert_int_ge(receive(s, buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "READY=1");

    ck_assert_int_eq(rnnd_notify_ready("models=2 sessions=7"), RNND_OK);
    ck_assert_int_ge(receive(s, buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "READY=1\nSTATUS=models=2 sessions=7");

    ck_assert_int_eq(rnnd_notify_status("sessions=%d %s", 42, "ok"), RNND_OK);
    ck_assert_int_ge(receive(s, buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "STATUS=sessions=42 ok");

    ck_assert_int_eq(rnnd_notify_stopping(), RNND_OK);
    ck_assert_int_ge(receive(s, buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "STOPPING=1");

    ck_assert_int_eq(rnnd_notify_watchdog(), RNND_OK);
    ck_assert_int_ge(receive(s, buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "WATCHDOG=1");
    close(s);
}
END_TEST

START_TEST(reloading_carries_monotonic_usec)
{
    int s = listener();
    char buf[256];
    uint64_t before = monotonic_usec();
    ck_assert_int_eq(rnnd_notify_reloading(), RNND_OK);
    uint64_t after = monotonic_usec();
    ck_assert_int_ge(receive(s, buf, sizeof buf), 0);
    unsigned long long usec = 0;
    char tail = 0;
    ck_assert_msg(sscanf(buf, "RELOADING=1\nMONOTONIC_USEC=%llu%c", &usec, &tail) == 1,
                  "datagram \"%s\"", buf);
    ck_assert_uint_ge(usec, before);
    ck_assert_uint_le(usec, after);
    close(s);
}
END_TEST

START_TEST(status_is_one_line_and_bounded)
{
    int s = listener();
    char buf[2048];
    /* a newline would start another assignment ("EVIL=1") */
    ck_assert_int_eq(rnnd_notify_status("a\nEVIL=1\rb"), RNND_OK);
    ck_assert_int_ge(receive(s, buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "STATUS=a EVIL=1 b");
    ck_assert_int_eq(rnnd_notify_ready("x\ny"), RNND_OK);
    ck_assert_int_ge(receive(s, buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "READY=1\nSTATUS=x y");

    char longs[1000];
    memset(longs, 'z', sizeof longs - 1);
    longs[sizeof longs - 1] = '\0';
    ck_assert_int_eq(rnnd_notify_status("%s", longs), RNND_OK);
    int n = receive(s, buf, sizeof buf);
    ck_assert_int_eq(n, (int)strlen("STATUS=") + 255);
    ck_assert_int_eq(rnnd_notify_ready(longs), RNND_OK);
    n = receive(s, buf, sizeof buf);
    ck_assert_int_eq(n, (int)strlen("READY=1\nSTATUS=") + 255);
    close(s);
}
END_TEST

START_TEST(unreachable_socket_is_an_error)
{
    setenv("NOTIFY_SOCKET", "@rnnd-check-notify-nobody-listens", 1);
    ck_assert_int_eq(rnnd_notify_ready(NULL), RNND_ERR_IO);
    ck_assert_int_eq(rnnd_notify_watchdog(), RNND_ERR_IO);
}
END_TEST

START_TEST(watchdog_usec)
{
    char pid[32];
    unsetenv("WATCHDOG_PID");
    unsetenv("WATCHDOG_USEC");
    ck_assert_uint_eq(rnnd_notify_watchdog_usec(), 0);
    setenv("WATCHDOG_USEC", "30000000", 1);
    ck_assert_uint_eq(rnnd_notify_watchdog_usec(), 30000000u);
    /* read again: the variable is kept for later calls */
    ck_assert_uint_eq(rnnd_notify_watchdog_usec(), 30000000u);
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    setenv("WATCHDOG_PID", pid, 1);
    ck_assert_uint_eq(rnnd_notify_watchdog_usec(), 30000000u);
    /* meant for another process */
    snprintf(pid, sizeof pid, "%d", (int)getpid() + 1);
    setenv("WATCHDOG_PID", pid, 1);
    ck_assert_uint_eq(rnnd_notify_watchdog_usec(), 0);
    unsetenv("WATCHDOG_PID");
    setenv("WATCHDOG_USEC", "soon", 1);
    ck_assert_uint_eq(rnnd_notify_watchdog_usec(), 0);
    setenv("WATCHDOG_USEC", "0", 1);
    ck_assert_uint_eq(rnnd_notify_watchdog_usec(), 0);
}
END_TEST

#else /* without libsystemd: no-ops */

START_TEST(silent_without_libsystemd)
{
    int s = listener();
    setenv("WATCHDOG_USEC", "30000000", 1);
    ck_assert_int_eq(rnnd_notify_ready("x"), RNND_OK);
    ck_assert_int_eq(rnnd_notify_reloading(), RNND_OK);
    ck_assert_int_eq(rnnd_notify_status("y"), RNND_OK);
    ck_assert_int_eq(rnnd_notify_stopping(), RNND_OK);
    ck_assert_int_eq(rnnd_notify_watchdog(), RNND_OK);
    ck_assert_uint_eq(rnnd_notify_watchdog_usec(), 0);
    ck_assert_int_eq(nothing_waiting(s), 1);
    close(s);
}
END_TEST

#endif

START_TEST(no_manager)
{
    /* not started by systemd: every call does nothing and succeeds */
    int s = listener();
    unsetenv("NOTIFY_SOCKET");
    ck_assert_int_eq(rnnd_notify_ready("x"), RNND_OK);
    ck_assert_int_eq(rnnd_notify_reloading(), RNND_OK);
    ck_assert_int_eq(rnnd_notify_status("%d", 1), RNND_OK);
    ck_assert_int_eq(rnnd_notify_stopping(), RNND_OK);
    ck_assert_int_eq(rnnd_notify_watchdog(), RNND_OK);
    ck_assert_int_eq(nothing_waiting(s), 1);
    close(s);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("notify");
    TCase *tc = tcase_create("sd_notify");
#ifdef HAVE_LIBSYSTEMD
    tcase_add_test(tc, messages);
    tcase_add_test(tc, reloading_carries_monotonic_usec);
    tcase_add_test(tc, status_is_one_line_and_bounded);
    tcase_add_test(tc, unreachable_socket_is_an_error);
    tcase_add_test(tc, watchdog_usec);
#else
    tcase_add_test(tc, silent_without_libsystemd);
#endif
    tcase_add_test(tc, no_manager);
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
