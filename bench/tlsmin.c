/*
 * The minimal mutual-TLS MQTT server: the practical limit of the TLS stack for a connect.
 *
 * Issue 15 asks for the gateway's server CPU per connect "reported against a minimal C server
 * on the same OpenSSL that does only the handshake and a fixed CONNACK". This is that server,
 * built like bench/loadgen.c against the system OpenSSL:
 *
 *   tlsmin --cert CHAIN --key KEY --ca CAFILE [--port P] [--threads T]
 *
 * It listens on 127.0.0.1:P (0: any free port; it prints "listening <port>" once bound), and
 * per connection: the TLS handshake with the client certificate required and verified against
 * CAFILE (the same server chain, key and client CAs the gateway and Mosquitto get), read one
 * MQTT CONNECT (fixed header, remaining length, body), write the fixed MQTT 5 CONNACK
 * 20 03 00 00 00 (no session, success, no properties), then read until the client closes.
 * Nothing else: no registry, no logging, no session tickets (SSL_CTX_set_num_tickets 0), no
 * session cache.
 *
 * One process, T threads (default 64) each blocking in accept() on the one listening socket and
 * serving its connection to the end: the connections the load generator keeps in flight (16)
 * never wait for a thread, and a thread that waits for the client's next flight costs no CPU,
 * so the server's CPU is the TLS stack's own work. A connection that stalls more than 10 s is
 * dropped (SO_RCVTIMEO), so no thread can hang for good. Stops on SIGTERM (default action).
 * Build: cc -O2 -pthread -o tlsmin tlsmin.c -lssl -lcrypto
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static SSL_CTX *g_ctx;
static int g_listener;

/* Read exactly n bytes; 0 on success. */
static int read_full(SSL *ssl, unsigned char *buf, int n) {
    int got = 0;
    while (got < n) {
        int r = SSL_read(ssl, buf + got, n - got);
        if (r <= 0) return -1;
        got += r;
    }
    return 0;
}

/* One MQTT packet of type CONNECT (0x10): fixed header, varint length, body (discarded). */
static int read_connect(SSL *ssl) {
    unsigned char byte, body[4096];
    if (read_full(ssl, &byte, 1) != 0 || (byte & 0xf0) != 0x10) return -1;
    long remaining = 0;
    for (int shift = 0; shift <= 21; shift += 7) {
        if (read_full(ssl, &byte, 1) != 0) return -1;
        remaining |= (long)(byte & 0x7f) << shift;
        if (!(byte & 0x80)) break;
        if (shift == 21) return -1;
    }
    while (remaining > 0) {
        int chunk = remaining > (long)sizeof body ? (int)sizeof body : (int)remaining;
        if (read_full(ssl, body, chunk) != 0) return -1;
        remaining -= chunk;
    }
    return 0;
}

static void serve(int fd) {
    static const unsigned char connack[] = {0x20, 0x03, 0x00, 0x00, 0x00};
    int one = 1;
    struct timeval timeout = {.tv_sec = 10};
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    SSL *ssl = SSL_new(g_ctx);
    SSL_set_fd(ssl, fd);
    if (SSL_accept(ssl) == 1 && read_connect(ssl) == 0 &&
        SSL_write(ssl, connack, sizeof connack) == (int)sizeof connack) {
        unsigned char sink[512];
        while (SSL_read(ssl, sink, sizeof sink) > 0) {
        }
    }
    ERR_clear_error();
    SSL_free(ssl);
    close(fd);
}

static void *run(void *arg) {
    (void)arg;
    for (;;) {
        int fd = accept(g_listener, NULL, NULL);
        if (fd >= 0) serve(fd);
    }
    return NULL;
}

int main(int argc, char **argv) {
    const char *cert = NULL, *key = NULL, *ca = NULL;
    int port = 0, threads = 64;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--cert")) cert = argv[i + 1];
        else if (!strcmp(argv[i], "--key")) key = argv[i + 1];
        else if (!strcmp(argv[i], "--ca")) ca = argv[i + 1];
        else if (!strcmp(argv[i], "--port")) port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else { fprintf(stderr, "tlsmin: unknown option %s\n", argv[i]); return 2; }
    }
    if (!cert || !key || !ca || threads < 1) {
        fprintf(stderr, "usage: tlsmin --cert CHAIN --key KEY --ca CAFILE [--port P] "
                        "[--threads T]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    g_ctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX_set_min_proto_version(g_ctx, TLS1_2_VERSION);
    SSL_CTX_set_session_cache_mode(g_ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(g_ctx, 0);
    if (SSL_CTX_use_certificate_chain_file(g_ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(g_ctx, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_load_verify_locations(g_ctx, ca, NULL) != 1) {
        ERR_print_errors_fp(stderr);
        return 1;
    }
    SSL_CTX_set_verify(g_ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);

    g_listener = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(g_listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    if (bind(g_listener, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        listen(g_listener, 1024) != 0) {
        perror("tlsmin: bind/listen");
        return 1;
    }
    socklen_t len = sizeof addr;
    getsockname(g_listener, (struct sockaddr *)&addr, &len);
    printf("listening %d\n", ntohs(addr.sin_port));
    fflush(stdout);
    pthread_t tid;
    for (int t = 0; t < threads; t++) {
        if (pthread_create(&tid, NULL, run, NULL) != 0) {
            perror("tlsmin: pthread_create");
            return 1;
        }
        pthread_detach(tid);
    }
    pause();
    return 0;
}
