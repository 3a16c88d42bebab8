/* `rnnd infer`: one infer request (docs/api.md) against one model file, from the command line.
 * The same parse/run/encode path the daemon uses, without HTTP. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "rnnd/buf.h"
#include "rnnd/errcode.h"
#include "rnnd/infer.h"
#include "rnnd/kernels.h"
#include "rnnd/model.h"
#include "rnnd/rnn.h"
#include "rnnd/status.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: rnnd infer --model FILE [--input FILE] [--compute f32|bf16]\n"
            "\n"
            "Run a model on one infer request and print the response JSON on stdout.\n"
            "The request and response are those of the HTTP API (docs/api.md):\n"
            "  {\"inputs\": [SEQUENCE, ...], \"outputs\": \"all\"|\"last\",\n"
            "   \"return_state\": true|false, \"initial_state\": [STATE|null, ...],\n"
            "   \"digest\": DIGEST}\n"
            "\n"
            "options:\n"
            "  -m, --model FILE   the model file (.rnnd); the response names the model by the\n"
            "                     file's name without the .rnnd suffix\n"
            "  -i, --input FILE   read the request from FILE (default, or \"-\": stdin)\n"
            "  --compute f32|bf16 how a bf16 model takes its products (default f32: each weight\n"
            "                     widened to float); bf16: the inputs rounded to bf16 too,\n"
            "                     pairs summed as VDPBF16PS does (docs/kernels.md, \"bf16\n"
            "                     compute\"); bf16 with other weights is an error\n"
            "  -h, --help         show this help\n"
            "\n"
            "environment:\n"
            "  RNND_ISA=scalar|avx2|avx512   force a kernel path (default: the best this CPU\n"
            "                                runs)\n"
            "\n"
            "On failure prints {\"error\": {\"code\": ..., \"message\": ...}} on stderr\n"
            "and exits with status 1; a usage error exits with status 2.\n");
}

/* Print the error JSON on stderr; returns the exit status 1. */
static int report(enum rnnd_errcode code, const char *message)
{
    rnnd_buf b;
    rnnd_buf_init(&b);
    rnnd_errcode_json(&b, code, message);
    if (rnnd_buf_failed(&b))
        fprintf(stderr, "{\"error\":{\"code\":\"%s\",\"message\":\"out of memory\"}}\n",
                rnnd_errcode_name(code));
    else
        fprintf(stderr, "%s\n", b.data);
    rnnd_buf_free(&b);
    return 1;
}

/* The whole of F into B. Returns 0 or errno. */
static int read_all(FILE *f, rnnd_buf *b)
{
    char chunk[65536];
    size_t n;

    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        rnnd_buf_append(b, chunk, n);
        if (rnnd_buf_failed(b))
            return ENOMEM;
    }
    return ferror(f) ? (errno ? errno : EIO) : 0;
}

/* "dir/name.rnnd" -> "name". */
static char *model_name(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (n > 5 && !strcmp(base + n - 5, ".rnnd"))
        n -= 5;
    return strndup(base, n);
}

/* Everything after argument parsing; returns the exit status. */
static int run(const char *model_path, const char *input_path, int bf16)
{
    char err[512] = "";
    rnnd_model *model = NULL;
    rnnd_net *net = NULL;
    rnnd_infer_req *req = NULL;
    json_t *body = NULL;
    char *name = NULL;
    const rnnd_kernels *k;
    FILE *f = stdin;
    rnnd_buf in, out;
    int status = 1, rc, e;

    rnnd_buf_init(&in);
    rnnd_buf_init(&out);

    k = rnnd_kernels_select(err, sizeof err);
    if (!k) {
        report(RNND_E_UNSUPPORTED, err);
        goto done;
    }
    rc = rnnd_model_open(model_path, &model, err, sizeof err);
    if (rc) {
        report(rnnd_errcode_of(rc), err);
        goto done;
    }
    if (bf16 && rnnd_model_set_compute(model, RNND_COMPUTE_BF16)) {
        snprintf(err, sizeof err, "%s: --compute bf16: the model's weights are %s, not bf16",
                 model_path, rnnd_weights_name(rnnd_model_get_spec(model)->weights));
        report(RNND_E_UNSUPPORTED, err);
        goto done;
    }
    rc = rnnd_net_new(model, k, &net, err, sizeof err);
    if (rc) {
        report(rnnd_errcode_of(rc), err);
        goto done;
    }

    if (input_path && strcmp(input_path, "-")) {
        f = fopen(input_path, "rb");
        if (!f) {
            e = errno;
            snprintf(err, sizeof err, "%s: %s", input_path, strerror(e));
            report(e == ENOENT ? RNND_E_NOT_FOUND : RNND_E_INTERNAL, err);
            goto done;
        }
    }
    e = read_all(f, &in);
    if (f != stdin)
        fclose(f);
    if (e) {
        snprintf(err, sizeof err, "%s: %s", input_path ? input_path : "stdin", strerror(e));
        report(e == ENOMEM ? RNND_E_OUT_OF_MEMORY : RNND_E_INTERNAL, err);
        goto done;
    }

    rc = rnnd_infer_load(in.data ? in.data : "", in.len, &body, err, sizeof err);
    if (rc) {
        report(RNND_E_INVALID_JSON, err);
        goto done;
    }
    rc = rnnd_infer_parse(net, body, NULL, &req, err, sizeof err);
    if (!rc)
        rc = rnnd_infer_run(net, req, err, sizeof err);
    if (rc) {
        report(rnnd_errcode_of(rc), err);
        goto done;
    }
    name = model_name(model_path);
    if (!name) {
        report(RNND_E_OUT_OF_MEMORY, "out of memory");
        goto done;
    }
    if (rnnd_infer_encode(net, req, name, &out) != 0) {
        report(RNND_E_INTERNAL, "the request was encoded before it ran");
        goto done;
    }
    rnnd_buf_append(&out, "\n", 1);
    if (rnnd_buf_failed(&out)) {
        report(out.nonfinite ? RNND_E_NUMERIC_ERROR : RNND_E_OUT_OF_MEMORY,
               out.nonfinite ? "the response holds a NaN or Inf" : "out of memory");
        goto done;
    }
    if (fwrite(out.data, 1, out.len, stdout) != out.len || fflush(stdout)) {
        snprintf(err, sizeof err, "stdout: %s", strerror(errno));
        report(RNND_E_INTERNAL, err);
        goto done;
    }
    status = 0;

done:
    free(name);
    json_decref(body);
    rnnd_infer_req_free(req);
    rnnd_net_free(net);
    rnnd_model_unref(model);
    rnnd_buf_free(&in);
    rnnd_buf_free(&out);
    return status;
}

int rnnd_cmd_infer(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, NULL, 'm'},
        {"input", required_argument, NULL, 'i'},
        {"help", no_argument, NULL, 'h'},
        {"compute", required_argument, NULL, 'C'},
        {NULL, 0, NULL, 0},
    };
    const char *model_path = NULL, *input_path = NULL, *compute = "f32";
    int c;

    optind = 1;
    while ((c = getopt_long(argc, argv, "m:i:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case 'i': input_path = optarg; break;
        case 'C': compute = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "rnnd infer: unexpected argument '%s'\n\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (!model_path) {
        fprintf(stderr, "rnnd infer: --model FILE is required\n\n");
        usage(stderr);
        return 2;
    }
    if (strcmp(compute, "f32") && strcmp(compute, "bf16")) {
        fprintf(stderr, "rnnd infer: --compute must be f32 or bf16\n\n");
        usage(stderr);
        return 2;
    }
    return run(model_path, input_path, !strcmp(compute, "bf16"));
}
