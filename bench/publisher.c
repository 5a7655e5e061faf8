/*
 * The messages benchmark's device: one MQTT 5 publisher over mutual TLS, in C on OpenSSL.
 *
 * Why C: three paho-mqtt (Python) publishers flooding a broker each want a core, and the
 * machine has two shared by everything, so with paho the generator and the server under
 * test fight for the CPU and the result depends on who needs less of it. This client costs
 * a few microseconds per message, so what is measured is the server. The same binary drives
 * Tether's gateway and Mosquitto in one run; like paho it writes each PUBLISH as its own
 * SSL_write (one TLS record per message, as a device sends them).
 *
 *   publisher PORT QOS CERT KEY CLIENT_ID TOPIC COUNT PROBE RATE WINDOW PAYLOAD
 *
 * Connects (client id CLIENT_ID, clean start), says "connected"; with PROBE 1 publishes a QoS 0
 * "probe" every 0.1 s until a line arrives on stdin, else waits for that line; then COUNT
 * messages of PAYLOAD bytes to TOPIC, each starting with its send time (CLOCK_REALTIME ns in
 * ASCII, what mosquitto_sub's %U prints), then a space. RATE 0: as fast as the socket takes
 * them; RATE R: one every 1/R s on a fixed schedule (never faster to catch up than the
 * schedule). QoS 1: at most WINDOW unacknowledged. Says "sent" when every PUBACK came.
 * The server's certificate is not verified (the server still verifies ours).
 * Build: cc -O2 -o publisher publisher.c -lssl -lcrypto
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static SSL *g_ssl;
static int g_fd;
static unsigned char g_in[1 << 16];
static size_t g_in_len;

static long long realtime_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void fail(const char *what) {
    unsigned long e = ERR_peek_error();
    char buf[200] = "";
    if (e) ERR_error_string_n(e, buf, sizeof buf);
    fprintf(stderr, "publisher: %s %s\n", what, buf);
    exit(1);
}

static void send_all(const unsigned char *data, size_t len) {
    if (SSL_write(g_ssl, data, (int)len) != (int)len) fail("write");
}

/* Read what is there (block if `wait`); returns how many PUBACKs arrived. */
static long read_acks(int wait) {
    if (!wait && SSL_pending(g_ssl) == 0) {
        struct pollfd p = {.fd = g_fd, .events = POLLIN};
        if (poll(&p, 1, 0) <= 0) return 0;
    }
    int r = SSL_read(g_ssl, g_in + g_in_len, (int)(sizeof g_in - g_in_len));
    if (r <= 0) fail("read (the server closed the connection)");
    g_in_len += (size_t)r;
    long acks = 0;
    size_t at = 0;
    while (g_in_len - at >= 2) {
        size_t remaining = 0, i = at + 1;
        int shift = 0;
        while (i < g_in_len && (g_in[i] & 0x80)) remaining |= (size_t)(g_in[i++] & 0x7f) << shift, shift += 7;
        if (i >= g_in_len) break;
        remaining |= (size_t)g_in[i++] << shift;
        if (g_in_len - i < remaining) break;
        unsigned char type = g_in[at] >> 4;
        if (type == 4) {
            if (remaining >= 3 && g_in[i + 2] >= 0x80) fail("PUBACK with an error reason code");
            acks++;
        } else if (type == 14) {
            fail("DISCONNECT from the server");
        }
        at = i + remaining;
    }
    memmove(g_in, g_in + at, g_in_len - at);
    g_in_len -= at;
    return acks;
}

/* One PUBLISH: fixed header, topic, packet id (QoS 1), no properties, payload. */
static size_t publish_packet(unsigned char *out, const char *topic, int qos, unsigned id,
                             const unsigned char *payload, size_t payload_len) {
    size_t topic_len = strlen(topic);
    size_t remaining = 2 + topic_len + (qos ? 2 : 0) + 1 + payload_len;
    size_t n = 0;
    out[n++] = (unsigned char)(0x30 | (qos << 1));
    do {
        unsigned char byte = remaining & 0x7f;
        remaining >>= 7;
        out[n++] = byte | (remaining ? 0x80 : 0);
    } while (remaining);
    out[n++] = (unsigned char)(topic_len >> 8);
    out[n++] = (unsigned char)topic_len;
    memcpy(out + n, topic, topic_len);
    n += topic_len;
    if (qos) {
        out[n++] = (unsigned char)(id >> 8);
        out[n++] = (unsigned char)id;
    }
    out[n++] = 0x00; /* no properties */
    memcpy(out + n, payload, payload_len);
    return n + payload_len;
}

int main(int argc, char **argv) {
    if (argc != 12) {
        fprintf(stderr, "usage: publisher PORT QOS CERT KEY CLIENT_ID TOPIC COUNT PROBE RATE "
                        "WINDOW PAYLOAD\n");
        return 2;
    }
    int port = atoi(argv[1]), qos = atoi(argv[2]);
    const char *cert = argv[3], *key = argv[4], *client_id = argv[5], *topic = argv[6];
    long count = atol(argv[7]);
    int probe = atoi(argv[8]);
    double rate = atof(argv[9]);
    long window = atol(argv[10]);
    size_t payload_len = (size_t)atol(argv[11]);
    if (strlen(topic) > 200 || strlen(client_id) > 100 || payload_len < 24 || payload_len > 1024)
        fail("bad arguments");
    signal(SIGPIPE, SIG_IGN);

    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set1_groups_list(ctx, "P-256");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) fail("certificate");
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) fail("key");
    g_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    int one = 1;
    setsockopt(g_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(g_fd, (struct sockaddr *)&addr, sizeof addr) != 0) fail("tcp connect");
    g_ssl = SSL_new(ctx);
    SSL_set_fd(g_ssl, g_fd);
    if (SSL_connect(g_ssl) != 1) fail("tls handshake");

    unsigned char packet[2048];
    size_t id_len = strlen(client_id), n = 0;
    packet[n++] = 0x10;
    packet[n++] = (unsigned char)(10 + 1 + 2 + id_len);
    memcpy(packet + n, "\x00\x04MQTT\x05\x02\x00\x3c", 10); /* v5, clean start, keep-alive 60 */
    n += 10;
    packet[n++] = 0x00;
    packet[n++] = 0x00;
    packet[n++] = (unsigned char)id_len;
    memcpy(packet + n, client_id, id_len);
    send_all(packet, n + id_len);
    while (g_in_len < 4) {
        int r = SSL_read(g_ssl, g_in + g_in_len, (int)(sizeof g_in - g_in_len));
        if (r <= 0) fail("no CONNACK");
        g_in_len += (size_t)r;
    }
    if (g_in[0] != 0x20 || g_in[3] != 0x00) fail("CONNACK refused");
    g_in_len = 0; /* nothing else comes before our first PUBLISH */
    printf("connected\n");
    fflush(stdout);

    struct pollfd in = {.fd = 0, .events = POLLIN};
    while (poll(&in, 1, probe ? 100 : -1) == 0)
        send_all(packet, publish_packet(packet, topic, 0, 0, (const unsigned char *)"probe", 5));
    char line[64];
    if (!fgets(line, sizeof line, stdin)) fail("no go");

    unsigned char payload[1024];
    memset(payload, 'x', sizeof payload);
    long in_flight = 0;
    unsigned next_id = 1;
    long long start = realtime_ns();
    for (long k = 0; k < count; k++) {
        if (rate > 0) {
            long long due = start + (long long)(k * 1e9 / rate);
            long long wait = due - realtime_ns();
            if (wait > 0) {
                struct timespec ts = {wait / 1000000000LL, wait % 1000000000LL};
                nanosleep(&ts, NULL);
            }
        }
        if (qos) {
            in_flight -= read_acks(0);
            while (in_flight >= window) in_flight -= read_acks(1);
        }
        int stamp = snprintf((char *)payload, 24, "%lld", realtime_ns());
        payload[stamp] = ' ';
        send_all(packet, publish_packet(packet, topic, qos, next_id, payload, payload_len));
        next_id = next_id % 65535 + 1;
        if (qos) in_flight++;
    }
    while (qos && in_flight > 0) in_flight -= read_acks(1);
    printf("sent\n");
    fflush(stdout);
    static const unsigned char disconnect[] = {0xe0, 0x00};
    send_all(disconnect, sizeof disconnect);
    SSL_shutdown(g_ssl);
    SSL_free(g_ssl);
    close(g_fd);
    return 0;
}
