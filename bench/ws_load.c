/* bench/ws_load: a WebSocket load generator for bench/e2e (wrk cannot speak WebSocket).
 *
 * Creates C sessions of MODEL over HTTP, upgrades one connection per session to its socket
 * (GET /v1/sessions/{id}/ws, docs/websocket.md), then each connection sends one step per
 * frame and waits for its reply before the next: JSON text frames ({"op":"step", ...the
 * body file's fields}) or binary frames (the 24-byte header of src/ws_codec.h, then the body
 * file's floats as float32). Client frames are masked (RFC 6455 5.3). T threads, each with
 * its own epoll and its share of the connections. W seconds of warm-up, then S measured.
 *
 *   ws_load --port N --model M --body FILE [--mode json|binary] [--connections C]
 *           [--threads T] [--seconds S] [--warmup W] [--pid PID]
 *
 * BODY FILE is an HTTP step body, {"inputs":[[x, ...]]} with one step. With --pid, the
 * process's user + system CPU seconds over the measured window (from /proc/PID/stat) are
 * reported as server_cpu_s. Prints one line, `E2E_JSON {...}`, with the fields of
 * bench/e2e_step.lua's (requests, duration_us, errors, latency_us with its percentiles),
 * and exits 0, or 1 when the set-up failed. */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { ERR_CONNECT, ERR_READ, ERR_WRITE, ERR_STATUS, ERR_TIMEOUT, N_ERR };
static const char *const err_names[N_ERR] = {"connect", "read", "write", "status", "timeout"};

typedef struct conn {
    int fd;
    int alive;
    uint32_t rng;
    double sent_at;
    unsigned char *in;
    size_t in_len, in_cap;
} conn;

typedef struct worker {
    pthread_t th;
    conn *conns;
    size_t n;
    uint32_t *lat; /* microseconds, one per measured reply */
    size_t n_lat, cap_lat;
    long errors[N_ERR];
} worker;

static struct {
    const char *host;
    int port;
    const char *model;
    int binary;
    int conns, threads, seconds, warmup;
    int pid;
    unsigned char *payload; /* the frame's payload, unmasked */
    size_t payload_len;
    double t_measure, t_end;
} g = {"127.0.0.1", 0, NULL, 0, 64, 2, 10, 2, 0, NULL, 0, 0, 0};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *msg)
{
    fprintf(stderr, "ws_load: %s\n", msg);
    exit(1);
}

static double proc_cpu_s(int pid)
{
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    unsigned long long ut = 0, st = 0;
    /* after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static int tcp_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)g.port);
    if (inet_pton(AF_INET, g.host, &a.sin_addr) != 1 ||
        connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static int send_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len) {
        ssize_t w = send(fd, p, len, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* POST /v1/sessions on a connection of its own; the new id into ID (33 bytes). */
static int create_session(char *id)
{
    int fd = tcp_connect();
    if (fd < 0)
        return -1;
    char req[512], resp[4096];
    int body_len = snprintf(resp, sizeof resp, "{\"model\":\"%s\"}", g.model);
    int n = snprintf(req, sizeof req,
                     "POST /v1/sessions HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n"
                     "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                     g.host, body_len, resp);
    size_t got = 0;
    if (n < 0 || (size_t)n >= sizeof req || send_all(fd, req, (size_t)n) != 0) {
        close(fd);
        return -1;
    }
    for (;;) {
        ssize_t r = recv(fd, resp + got, sizeof resp - 1 - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
        if (got == sizeof resp - 1)
            break;
    }
    close(fd);
    resp[got] = 0;
    const char *p = strstr(resp, "\"id\":");
    if (strncmp(resp, "HTTP/1.1 201", 12) != 0 || !p)
        return -1;
    p = strchr(p + 5, '"');
    if (!p || strlen(p) < 34 || p[33] != '"')
        return -1;
    memcpy(id, p + 1, 32);
    id[32] = 0;
    return 0;
}

/* A connection upgraded to session ID's socket; bytes read past the 101's head stay in C. */
static int ws_open(conn *c, const char *id)
{
    c->fd = tcp_connect();
    if (c->fd < 0)
        return -1;
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET /v1/sessions/%s/ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     id, g.host);
    if (n < 0 || (size_t)n >= sizeof req || send_all(c->fd, req, (size_t)n) != 0)
        return -1;
    for (;;) {
        if (c->in_len == c->in_cap)
            return -1;
        ssize_t r = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        c->in_len += (size_t)r;
        unsigned char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
        if (end) {
            if (c->in_len < 12 || memcmp(c->in, "HTTP/1.1 101", 12) != 0)
                return -1;
            size_t head = (size_t)(end + 4 - c->in);
            memmove(c->in, c->in + head, c->in_len - head);
            c->in_len -= head;
            return 0;
        }
    }
}

static uint32_t xorshift(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

/* One masked frame of the payload; FRAME has room for 14 + payload_len bytes. */
static int send_step(conn *c, unsigned char *frame)
{
    size_t len = g.payload_len, h = 0;
    frame[h++] = (unsigned char)(0x80 | (g.binary ? 2 : 1));
    if (len < 126) {
        frame[h++] = (unsigned char)(0x80 | len);
    } else if (len < 65536) {
        frame[h++] = 0x80 | 126;
        frame[h++] = (unsigned char)(len >> 8);
        frame[h++] = (unsigned char)len;
    } else {
        frame[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            frame[h++] = (unsigned char)((uint64_t)len >> (8 * i));
    }
    uint32_t key = xorshift(&c->rng);
    unsigned char mask[4];
    memcpy(mask, &key, 4);
    memcpy(frame + h, mask, 4);
    h += 4;
    for (size_t i = 0; i < len; i++)
        frame[h + i] = g.payload[i] ^ mask[i & 3];
    c->sent_at = now_s();
    return send_all(c->fd, frame, h + len);
}

/* The length of the complete server frame at the start of C's buffer, its opcode and payload
 * offset; 0 when it is not all there yet. */
static size_t frame_at(const conn *c, int *opcode, size_t *off, size_t *plen)
{
    const unsigned char *p = c->in;
    if (c->in_len < 2)
        return 0;
    *opcode = p[0] & 0x0f;
    uint64_t len = p[1] & 0x7f;
    size_t h = 2;
    if (len == 126) {
        if (c->in_len < 4)
            return 0;
        len = ((uint64_t)p[2] << 8) | p[3];
        h = 4;
    } else if (len == 127) {
        if (c->in_len < 10)
            return 0;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = (len << 8) | p[2 + i];
        h = 10;
    }
    if (len > ((size_t)1 << 30))
        return (size_t)-1;
    if (c->in_len < h + len)
        return 0;
    *off = h;
    *plen = (size_t)len;
    return h + (size_t)len;
}

static int reply_ok(int opcode, const unsigned char *p, size_t len)
{
    if (g.binary)
        return opcode == 2 && len >= 24 && p[0] == 'R' && p[1] == 'W' && p[3] == 3;
    static const char want[] = "{\"status\":200";
    return opcode == 1 && len >= sizeof want - 1 && memcmp(p, want, sizeof want - 1) == 0;
}

static void record(worker *w, double t_reply, double lat_s)
{
    if (t_reply < g.t_measure || t_reply > g.t_end)
        return;
    if (w->n_lat == w->cap_lat) {
        size_t cap = w->cap_lat ? 2 * w->cap_lat : 65536;
        uint32_t *n = realloc(w->lat, cap * sizeof *n);
        if (!n)
            die("out of memory");
        w->lat = n;
        w->cap_lat = cap;
    }
    w->lat[w->n_lat++] = (uint32_t)(lat_s * 1e6 + 0.5);
}

static void drop(worker *w, conn *c, int why)
{
    if (now_s() >= g.t_measure)
        w->errors[why]++;
    c->alive = 0;
    close(c->fd);
    c->fd = -1;
}

static void *run_worker(void *arg)
{
    worker *w = arg;
    int ep = epoll_create1(0);
    unsigned char *frame = malloc(14 + g.payload_len);
    if (ep < 0 || !frame)
        die("epoll or memory");
    for (size_t i = 0; i < w->n; i++) {
        conn *c = &w->conns[i];
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) != 0 || send_step(c, frame) != 0)
            drop(w, c, ERR_WRITE);
    }
    struct epoll_event evs[64];
    for (;;) {
        double t = now_s();
        if (t >= g.t_end)
            break;
        int ms = (int)((g.t_end - t) * 1000) + 1;
        int n = epoll_wait(ep, evs, 64, ms > 100 ? 100 : ms);
        for (int k = 0; k < n; k++) {
            conn *c = evs[k].data.ptr;
            if (!c->alive)
                continue;
            if (c->in_cap - c->in_len < 65536) {
                unsigned char *nb = realloc(c->in, c->in_cap * 2);
                if (!nb)
                    die("out of memory");
                c->in = nb;
                c->in_cap *= 2;
            }
            ssize_t r = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
            if (r < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            if (r <= 0) {
                drop(w, c, ERR_READ);
                continue;
            }
            c->in_len += (size_t)r;
            int opcode;
            size_t off, plen, fl;
            while (c->alive && (fl = frame_at(c, &opcode, &off, &plen)) != 0) {
                if (fl == (size_t)-1 || opcode == 8) {
                    drop(w, c, ERR_READ);
                    break;
                }
                double t_reply = now_s();
                int ok = reply_ok(opcode, c->in + off, plen);
                memmove(c->in, c->in + fl, c->in_len - fl);
                c->in_len -= fl;
                if (ok)
                    record(w, t_reply, t_reply - c->sent_at);
                else if (t_reply >= g.t_measure && t_reply <= g.t_end)
                    w->errors[ERR_STATUS]++;
                if (t_reply < g.t_end && send_step(c, frame) != 0)
                    drop(w, c, ERR_WRITE);
            }
        }
    }
    free(frame);
    close(ep);
    return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* The payload of a step frame from the HTTP step body BODY: the JSON with "op":"step" in
 * front of its fields, or the binary header and the floats of its one step. */
static void make_payload(char *body, size_t len)
{
    while (len && (body[len - 1] == '\n' || body[len - 1] == ' '))
        body[--len] = 0;
    if (!g.binary) {
        if (len < 2 || body[0] != '{')
            die("the body file is not a JSON object");
        static const char op[] = "{\"op\":\"step\",";
        g.payload = malloc(len + sizeof op);
        if (!g.payload)
            die("out of memory");
        memcpy(g.payload, op, sizeof op - 1);
        memcpy(g.payload + sizeof op - 1, body + 1, len - 1);
        g.payload_len = sizeof op - 1 + len - 1;
        return;
    }
    const char *p = strstr(body, "[[");
    if (!p)
        die("the body file has no \"inputs\":[[...]]");
    p += 2;
    size_t n = 0, cap = 1024;
    float *v = malloc(cap * sizeof *v);
    if (!v)
        die("out of memory");
    for (;;) {
        char *end;
        float x = strtof(p, &end);
        if (end == p)
            die("the body file's inputs are not numbers");
        if (n == cap) {
            float *nv = realloc(v, 2 * cap * sizeof *v);
            if (!nv)
                die("out of memory");
            v = nv;
            cap *= 2;
        }
        v[n++] = x;
        p = end;
        while (*p == ' ')
            p++;
        if (*p == ']')
            break;
        if (*p != ',')
            die("the body file's inputs are not one step of numbers");
        p++;
    }
    g.payload_len = 24 + 4 * n;
    g.payload = calloc(1, g.payload_len);
    if (!g.payload)
        die("out of memory");
    unsigned char *h = g.payload;
    h[0] = 'R';
    h[1] = 'W';
    h[2] = 1;
    h[3] = 1;
    h[8] = 1; /* n_steps = 1, seq 0, flags 0 */
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        for (int b = 0; b < 4; b++)
            h[24 + 4 * i + (size_t)b] = (unsigned char)(u >> (8 * b));
    }
    free(v);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: ws_load --port N --model M --body FILE [--mode json|binary] "
            "[--connections C] [--threads T] [--seconds S] [--warmup W] [--pid PID] "
            "[--host IPV4]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *body_file = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            usage();
        if (!strcmp(a, "--port"))
            g.port = atoi(v);
        else if (!strcmp(a, "--host"))
            g.host = v;
        else if (!strcmp(a, "--model"))
            g.model = v;
        else if (!strcmp(a, "--body"))
            body_file = v;
        else if (!strcmp(a, "--mode") && (!strcmp(v, "json") || !strcmp(v, "binary")))
            g.binary = !strcmp(v, "binary");
        else if (!strcmp(a, "--connections"))
            g.conns = atoi(v);
        else if (!strcmp(a, "--threads"))
            g.threads = atoi(v);
        else if (!strcmp(a, "--seconds"))
            g.seconds = atoi(v);
        else if (!strcmp(a, "--warmup"))
            g.warmup = atoi(v);
        else if (!strcmp(a, "--pid"))
            g.pid = atoi(v);
        else
            usage();
        i++;
    }
    if (g.port <= 0 || !g.model || !body_file || g.conns < 1 || g.threads < 1 || g.seconds < 1 ||
        g.warmup < 0 || strlen(g.model) > 200)
        usage();
    if (g.threads > g.conns)
        g.threads = g.conns;

    FILE *f = fopen(body_file, "rb");
    if (!f)
        die("cannot open the body file");
    char *body = malloc(1 << 24);
    if (!body)
        die("out of memory");
    size_t blen = fread(body, 1, (1 << 24) - 1, f);
    fclose(f);
    body[blen] = 0;
    make_payload(body, blen);
    free(body);

    conn *conns = calloc((size_t)g.conns, sizeof *conns);
    worker *ws = calloc((size_t)g.threads, sizeof *ws);
    if (!conns || !ws)
        die("out of memory");
    for (int i = 0; i < g.conns; i++) {
        conn *c = &conns[i];
        char id[33];
        c->in_cap = 1 << 17;
        c->in = malloc(c->in_cap);
        c->rng = 2463534242u + (uint32_t)i * 2654435761u;
        if (!c->in)
            die("out of memory");
        if (create_session(id) != 0)
            die("creating a session failed");
        if (ws_open(c, id) != 0)
            die("the WebSocket upgrade failed");
        c->alive = 1;
    }
    /* connection i to thread i % T, in one block per thread */
    size_t per = (size_t)g.conns / (size_t)g.threads, extra = (size_t)g.conns % (size_t)g.threads;
    size_t at = 0;
    for (int t = 0; t < g.threads; t++) {
        ws[t].conns = conns + at;
        ws[t].n = per + ((size_t)t < extra);
        at += ws[t].n;
    }

    double t0 = now_s();
    g.t_measure = t0 + g.warmup;
    g.t_end = g.t_measure + g.seconds;
    for (int t = 0; t < g.threads; t++)
        if (pthread_create(&ws[t].th, NULL, run_worker, &ws[t]) != 0)
            die("pthread_create");
    double cpu0 = -1, cpu1 = -1;
    if (g.pid) {
        double left = g.t_measure - now_s();
        if (left > 0) {
            struct timespec ts = {(time_t)left, (long)((left - (double)(time_t)left) * 1e9)};
            nanosleep(&ts, NULL);
        }
        cpu0 = proc_cpu_s(g.pid);
        left = g.t_end - now_s();
        if (left > 0) {
            struct timespec ts = {(time_t)left, (long)((left - (double)(time_t)left) * 1e9)};
            nanosleep(&ts, NULL);
        }
        cpu1 = proc_cpu_s(g.pid);
    }
    long errors[N_ERR] = {0};
    size_t n = 0;
    for (int t = 0; t < g.threads; t++) {
        pthread_join(ws[t].th, NULL);
        n += ws[t].n_lat;
        for (int e = 0; e < N_ERR; e++)
            errors[e] += ws[t].errors[e];
    }
    for (int i = 0; i < g.conns; i++) {
        if (conns[i].alive)
            close(conns[i].fd);
        free(conns[i].in);
    }
    uint32_t *lat = malloc((n ? n : 1) * sizeof *lat);
    if (!lat)
        die("out of memory");
    size_t k = 0;
    double sum = 0, sum2 = 0;
    for (int t = 0; t < g.threads; t++) {
        memcpy(lat + k, ws[t].lat, ws[t].n_lat * sizeof *lat);
        k += ws[t].n_lat;
        free(ws[t].lat);
    }
    qsort(lat, n, sizeof *lat, cmp_u32);
    for (size_t i = 0; i < n; i++) {
        sum += lat[i];
        sum2 += (double)lat[i] * lat[i];
    }
    double mean = n ? sum / (double)n : 0;
    double sd = n > 1 ? sqrt(fmax(0, (sum2 - sum * mean) / (double)(n - 1))) : 0;
#define PCT(q) (n ? lat[(size_t)((q) / 100.0 * (double)(n - 1) + 0.5)] : 0u)
    printf("E2E_JSON {\"requests\":%zu,\"duration_us\":%.0f,\"errors\":{", n,
           (g.t_end - g.t_measure) * 1e6);
    for (int e = 0; e < N_ERR; e++)
        printf("%s\"%s\":%ld", e ? "," : "", err_names[e], errors[e]);
    printf("},\"latency_us\":{\"min\":%u,\"mean\":%.1f,\"max\":%u,\"stdev\":%.1f,\"50\":%u,"
           "\"90\":%u,\"99\":%u,\"99.9\":%u},\"mode\":\"%s\",\"connections\":%d,\"threads\":%d,"
           "\"frame_bytes\":%zu",
           n ? lat[0] : 0u, mean, n ? lat[n - 1] : 0u, sd, PCT(50), PCT(90), PCT(99), PCT(99.9),
           g.binary ? "binary" : "json", g.conns, g.threads, g.payload_len);
    if (cpu0 >= 0 && cpu1 >= 0)
        printf(",\"server_cpu_s\":%.2f", cpu1 - cpu0);
    printf("}\n");
    free(lat);
    free(conns);
    free(ws);
    free(g.payload);
    return 0;
}
