/*
 * The benchmarks' load generator: mutual-TLS connections plus an MQTT 5 CONNECT/CONNACK.
 *
 * Written in C on the same OpenSSL the servers use so that the client side costs as little as
 * possible on a machine it shares with the server under test; the same binary drives Tether's
 * gateway and Mosquitto, alternating, in one run. It measures only what the server is asked to
 * do, so it does not verify the server's certificate (the server still does the full mutual
 * handshake: its own signature, the client certificate chain and the client's
 * CertificateVerify). Key exchange is pinned to P-256, the curve `openssl speed ecdhp256`
 * measures for the crypto limit.
 *
 *   loadgen connect --port P --identities DIR --threads T --duration S
 *       T threads each open a connection, complete TLS, send CONNECT, read CONNACK (reason
 *       0), close; for S seconds. Prints one JSON object: connections, errors by kind, rate,
 *       handshake latency percentiles (connect() to CONNACK), and the generator's own CPU.
 *   loadgen hold --port P --identities DIR --count N --threads T
 *       opens N sessions and keeps them; prints {"ready": ...} when all are open, then holds
 *       them until stdin closes, then prints a final JSON line and exits.
 *
 * DIR holds id-<i>.crt / id-<i>.key (PEM) and serials.txt (one client id per line, line i is
 * identity i). Thread t uses identities t, t+T, t+2T... so no two threads share one.
 * Build: cc -O2 -pthread -o loadgen loadgen.c -lssl -lcrypto
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_LATENCIES 2000000

struct identity {
    SSL_CTX *ctx;
    char client_id[160];
};

struct worker {
    int index;
    long connections;
    long err_tcp, err_tls, err_mqtt, refused;
    double *latencies;
    long n_latencies;
    SSL **held;
    int *held_fd;
    long n_held;
    char first_error[256];
};

static const char *g_host = "127.0.0.1";
static int g_port;
static struct identity *g_ids;
static int g_n_ids;
static int g_threads = 1;
static double g_duration = 5.0;
static long g_count;
static int g_hold;
static atomic_int g_stop;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void note(struct worker *w, const char *what) {
    if (w->first_error[0] == '\0') {
        unsigned long e = ERR_peek_error();
        char buf[160] = "";
        if (e) ERR_error_string_n(e, buf, sizeof buf);
        snprintf(w->first_error, sizeof w->first_error, "%s %s errno=%d", what, buf, errno);
    }
    ERR_clear_error();
}

static int load_identities(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/serials.txt", dir);
    FILE *f = fopen(path, "r");
    if (!f) { perror(path); return -1; }
    int cap = 1024;
    g_ids = calloc(cap, sizeof *g_ids);
    char line[200];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0]) continue;
        if (g_n_ids == cap) { cap *= 2; g_ids = realloc(g_ids, cap * sizeof *g_ids); }
        struct identity *id = &g_ids[g_n_ids];
        snprintf(id->client_id, sizeof id->client_id, "%s", line);
        id->ctx = SSL_CTX_new(TLS_client_method());
        SSL_CTX_set_min_proto_version(id->ctx, TLS1_2_VERSION);
        SSL_CTX_set1_groups_list(id->ctx, "P-256");
        SSL_CTX_set_verify(id->ctx, SSL_VERIFY_NONE, NULL);
        SSL_CTX_set_session_cache_mode(id->ctx, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_options(id->ctx, SSL_OP_NO_TICKET);
        snprintf(path, sizeof path, "%s/id-%d.crt", dir, g_n_ids);
        if (SSL_CTX_use_certificate_chain_file(id->ctx, path) != 1) { perror(path); return -1; }
        snprintf(path, sizeof path, "%s/id-%d.key", dir, g_n_ids);
        if (SSL_CTX_use_PrivateKey_file(id->ctx, path, SSL_FILETYPE_PEM) != 1) {
            perror(path);
            return -1;
        }
        g_n_ids++;
    }
    fclose(f);
    return g_n_ids > 0 ? 0 : -1;
}

static size_t connect_packet(unsigned char *out, const char *client_id) {
    size_t id_len = strlen(client_id);
    size_t remaining = 10 + 1 + 2 + id_len; /* variable header, no properties, client id */
    size_t n = 0;
    out[n++] = 0x10;
    out[n++] = (unsigned char)remaining; /* client ids are short: one length byte */
    memcpy(out + n, "\x00\x04MQTT\x05\x02\x02\x58", 10); /* v5, clean start, keep-alive 600 */
    n += 10;
    out[n++] = 0x00; /* no properties */
    out[n++] = (unsigned char)(id_len >> 8);
    out[n++] = (unsigned char)(id_len & 0xff);
    memcpy(out + n, client_id, id_len);
    return n + id_len;
}

/* One session: TCP, TLS, CONNECT, CONNACK. Returns the SSL (caller closes) or NULL. */
static SSL *open_session(struct worker *w, struct identity *id, int *fd_out) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_port)};
    inet_pton(AF_INET, g_host, &addr.sin_addr);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        w->err_tcp++;
        note(w, "tcp");
        if (fd >= 0) close(fd);
        return NULL;
    }
    SSL *ssl = SSL_new(id->ctx);
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1) {
        w->err_tls++;
        note(w, "tls");
        SSL_free(ssl);
        close(fd);
        return NULL;
    }
    unsigned char packet[256], reply[64];
    size_t len = connect_packet(packet, id->client_id);
    if (SSL_write(ssl, packet, (int)len) != (int)len) {
        w->err_mqtt++;
        note(w, "write");
        goto fail;
    }
    int got = 0;
    while (got < 4) { /* fixed header, remaining length, flags, reason code */
        int r = SSL_read(ssl, reply + got, (int)sizeof reply - got);
        if (r <= 0) {
            w->err_mqtt++;
            note(w, "read");
            goto fail;
        }
        got += r;
    }
    if (reply[0] != 0x20 || reply[3] != 0x00) {
        w->refused++;
        if (w->first_error[0] == '\0')
            snprintf(w->first_error, sizeof w->first_error, "connack type=%#x reason=%#x",
                     reply[0], reply[3]);
        goto fail;
    }
    *fd_out = fd;
    return ssl;
fail:
    SSL_free(ssl);
    close(fd);
    return NULL;
}

static void close_session(SSL *ssl, int fd) {
    static const unsigned char disconnect[] = {0xe0, 0x00};
    SSL_write(ssl, disconnect, sizeof disconnect);
    SSL_shutdown(ssl);
    SSL_free(ssl);
    close(fd);
}

static void *run_connect(void *arg) {
    struct worker *w = arg;
    int k = 0;
    while (!atomic_load(&g_stop)) {
        int index = w->index + (k++ * g_threads);
        if (index >= g_n_ids) { k = 0; index = w->index; }
        double start = now();
        int fd;
        SSL *ssl = open_session(w, &g_ids[index], &fd);
        if (ssl == NULL) { usleep(1000); continue; }
        double elapsed = now() - start;
        close_session(ssl, fd);
        w->connections++;
        if (w->n_latencies < MAX_LATENCIES / g_threads) w->latencies[w->n_latencies++] = elapsed;
    }
    return NULL;
}

static void *run_hold(void *arg) {
    struct worker *w = arg;
    long mine = g_count / g_threads + (w->index < g_count % g_threads ? 1 : 0);
    w->held = calloc(mine, sizeof *w->held);
    w->held_fd = calloc(mine, sizeof *w->held_fd);
    for (long k = 0; k < mine; k++) {
        long index = w->index + k * g_threads;
        int fd;
        SSL *ssl = NULL;
        for (int attempt = 0; attempt < 5 && ssl == NULL; attempt++) {
            ssl = open_session(w, &g_ids[index % g_n_ids], &fd);
            if (ssl == NULL) usleep(20000);
        }
        if (ssl == NULL) continue;
        w->held[w->n_held] = ssl;
        w->held_fd[w->n_held++] = fd;
        w->connections++;
    }
    return NULL;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static void print_totals(struct worker *ws, double elapsed, double cpu) {
    long connections = 0, tcp = 0, tls = 0, mqtt = 0, refused = 0, n = 0;
    const char *first = "";
    for (int t = 0; t < g_threads; t++) {
        connections += ws[t].connections;
        tcp += ws[t].err_tcp;
        tls += ws[t].err_tls;
        mqtt += ws[t].err_mqtt;
        refused += ws[t].refused;
        n += ws[t].n_latencies;
        if (!first[0] && ws[t].first_error[0]) first = ws[t].first_error;
    }
    double *all = malloc((n ? n : 1) * sizeof *all);
    long m = 0;
    for (int t = 0; t < g_threads; t++)
        for (long i = 0; i < ws[t].n_latencies; i++) all[m++] = ws[t].latencies[i];
    qsort(all, n, sizeof *all, compare);
    double p50 = n ? all[n / 2] : 0, p99 = n ? all[(long)(n * 0.99)] : 0;
    printf("{\"connections\": %ld, \"seconds\": %.3f, \"rate\": %.1f, \"errors\": {\"tcp\": %ld, "
           "\"tls\": %ld, \"mqtt\": %ld, \"refused\": %ld}, \"first_error\": \"%s\", "
           "\"latency_ms\": {\"p50\": %.3f, \"p99\": %.3f}, \"threads\": %d, "
           "\"loadgen_cpu_seconds\": %.3f}\n",
           connections, elapsed, connections / elapsed, tcp, tls, mqtt, refused, first,
           p50 * 1e3, p99 * 1e3, g_threads, cpu);
    fflush(stdout);
    free(all);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: loadgen connect|hold --port P --identities DIR [...]\n");
        return 2;
    }
    g_hold = strcmp(argv[1], "hold") == 0;
    const char *dir = NULL;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--port")) g_port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--host")) g_host = argv[i + 1];
        else if (!strcmp(argv[i], "--identities")) dir = argv[i + 1];
        else if (!strcmp(argv[i], "--threads")) g_threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--duration")) g_duration = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--count")) g_count = atol(argv[i + 1]);
        else { fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
    }
    if (!dir || !g_port || g_threads < 1 || load_identities(dir) != 0) {
        fprintf(stderr, "loadgen: need --port and a readable --identities directory\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN); /* a refused client's writes hit a closed socket: count, go on */
    struct rlimit limit;
    getrlimit(RLIMIT_NOFILE, &limit);
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);

    struct worker *ws = calloc(g_threads, sizeof *ws);
    pthread_t *tids = calloc(g_threads, sizeof *tids);
    double cpu0 = cpu_seconds(), t0 = now();
    for (int t = 0; t < g_threads; t++) {
        ws[t].index = t;
        if (!g_hold) ws[t].latencies = malloc(sizeof(double) * (MAX_LATENCIES / g_threads));
        pthread_create(&tids[t], NULL, g_hold ? run_hold : run_connect, &ws[t]);
    }
    if (!g_hold) {
        usleep((useconds_t)(g_duration * 1e6));
        atomic_store(&g_stop, 1);
    }
    for (int t = 0; t < g_threads; t++) pthread_join(tids[t], NULL);
    double elapsed = now() - t0;
    print_totals(ws, elapsed, cpu_seconds() - cpu0);
    if (g_hold) {
        char buf[64];
        while (fread(buf, 1, sizeof buf, stdin) > 0) {
        }
        for (int t = 0; t < g_threads; t++)
            for (long i = 0; i < ws[t].n_held; i++) close_session(ws[t].held[i], ws[t].held_fd[i]);
    }
    return 0;
}
