/* rnnd: serve recurrent neural networks. main() only dispatches to a subcommand. */
#include "config.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd.h"

struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
};

static const struct command commands[] = {
    {"serve", rnnd_cmd_serve, "serve models over HTTP/JSON (rnnd serve --help)"},
    {"infer", rnnd_cmd_infer, "run a model on an infer request (JSON) and print the response"},
    {"bench", rnnd_cmd_bench, "time the core on random weights (rnnd bench --help)"},
    {"inspect", rnnd_cmd_inspect, "print a model file's architecture and sizes"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: rnnd COMMAND [OPTIONS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\n`rnnd COMMAND --help` describes each command's options.\n");
}

/* OpenBLAS reads its environment in a constructor that runs before main():
 * - OPENBLAS_CORETYPE picks its kernels; these machines export OPENBLAS_CORETYPE=Haswell,
 *   which would make results and speed depend on the environment, so we drop it and OpenBLAS
 *   detects the CPU itself;
 * - it starts its own thread pool (one thread per core) unless OPENBLAS_NUM_THREADS is 1.
 *   rnnd computes on its own workers, and those threads would not block the signals the
 *   daemon waits for with sigtimedwait(): a SIGTERM delivered to one of them would kill the
 *   process instead of shutting it down cleanly. So we ask for no OpenBLAS threads.
 * Both take effect only at start-up, so we re-execute once with the corrected environment.
 * We execute the path /proc/self/exe resolves to, not the link itself: the kernel names the
 * process after the file executed, and "exe" would hide the daemon from `pgrep -x rnnd`.
 * If the re-exec fails we carry on with what we have. */
static void openblas_environment(char **argv)
{
    const char *threads = getenv("OPENBLAS_NUM_THREADS");
    if (!getenv("OPENBLAS_CORETYPE") && threads && !strcmp(threads, "1"))
        return;
    unsetenv("OPENBLAS_CORETYPE");
    setenv("OPENBLAS_NUM_THREADS", "1", 1);
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
        execv(self, argv); /* fails when the file was replaced or removed since */
    }
    execv("/proc/self/exe", argv);
}

int main(int argc, char **argv)
{
    openblas_environment(argv);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("rnnd %s\n", PACKAGE_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "rnnd: unknown command '%s' (try rnnd --help)\n", argv[1]);
    return 2;
}
