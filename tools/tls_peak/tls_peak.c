/* mbedTLS's own heap use for one case connection: what a chip must find for TLS beyond the
 * Python objects (docs/memory.md, "TLS and the boards' heaps").
 *
 * It does what the firmware's tls_wrap (firmware/lockcase/uplink/transport.py) makes MicroPython's
 * tls module do: an SSLContext (entropy, CTR-DRBG, a client config, CERT_REQUIRED, the CA
 * given as DER), wrap_socket with server_hostname (one handshake), then an MQTT CONNECT and its
 * CONNACK. Every calloc and free that mbedTLS makes is counted.
 *
 * Debian's mbedTLS is not built with MBEDTLS_PLATFORM_MEMORY, so mbedtls_platform_set_calloc_free
 * does not exist there. The library is linked statically instead, with
 * -Wl,--wrap=calloc -Wl,--wrap=free: the linker sends the library's own calls (and only
 * those of the objects linked here, not libc's) to the counters below. This file makes no
 * calloc of its own, so every counted byte is mbedTLS's.
 *
 * Output: one JSON object on stdout. Exit 0 when the MQTT session was set up, 2 when the TLS
 * handshake failed (the JSON then says why), 1 on a usage or socket error.
 */
#define MBEDTLS_ALLOW_PRIVATE_ACCESS
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_ciphersuites.h>
#include <mbedtls/version.h>
#include <mbedtls/x509_crt.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* The size rides in front of each block, so free() can take it off the count. 16 bytes keeps
 * the caller's block aligned as malloc's is on both x86-64 and i386. */
#define HDR 16

static size_t cur_bytes, peak_bytes, cur_blocks, peak_blocks;
/* On a Pico W each mbedTLS allocation is an m_tracked_calloc: an 8-byte node (two pointers)
 * in front of the data, in the GC heap's 16-byte blocks. */
static size_t cur_gc, peak_gc, largest_block;
static int recording;
static size_t recorded[64];
static int n_recorded;

static size_t gc_cost(size_t n) {
    return (n + 2 * 4 + 15) / 16 * 16;
}

void *__real_calloc(size_t n, size_t size);
void __real_free(void *p);

void *__wrap_calloc(size_t n, size_t size) {
    if (size != 0 && n > (SIZE_MAX - HDR) / size) {
        return NULL;
    }
    size_t bytes = n * size;
    unsigned char *p = __real_calloc(1, bytes + HDR);
    if (p == NULL) {
        return NULL;
    }
    memcpy(p, &bytes, sizeof(bytes));
    cur_bytes += bytes;
    cur_gc += gc_cost(bytes);
    cur_blocks++;
    if (cur_bytes > peak_bytes) {
        peak_bytes = cur_bytes;
    }
    if (cur_gc > peak_gc) {
        peak_gc = cur_gc;
    }
    if (cur_blocks > peak_blocks) {
        peak_blocks = cur_blocks;
    }
    if (bytes > largest_block) {
        largest_block = bytes;
    }
    if (recording && n_recorded < 64) {
        recorded[n_recorded++] = bytes;
    }
    return p + HDR;
}

void __wrap_free(void *q) {
    if (q == NULL) {
        return;
    }
    unsigned char *p = (unsigned char *)q - HDR;
    size_t bytes;
    memcpy(&bytes, p, sizeof(bytes));
    cur_bytes -= bytes;
    cur_gc -= gc_cost(bytes);
    cur_blocks--;
    __real_free(p);
}

struct snap {
    size_t bytes, gc, blocks;
};

static struct snap snap_now(void) {
    struct snap s = {cur_bytes, cur_gc, cur_blocks};
    return s;
}

static void reset_peak(void) {
    peak_bytes = cur_bytes;
    peak_gc = cur_gc;
    peak_blocks = cur_blocks;
}

static int send_cb(void *ctx, const unsigned char *buf, size_t len) {
    ssize_t n = send(*(int *)ctx, buf, len, MSG_NOSIGNAL);
    return n < 0 ? MBEDTLS_ERR_NET_SEND_FAILED : (int)n;
}

static int recv_cb(void *ctx, unsigned char *buf, size_t len) {
    ssize_t n = recv(*(int *)ctx, buf, len, 0);
    if (n == 0) {
        return MBEDTLS_ERR_SSL_CONN_EOF;
    }
    return n < 0 ? MBEDTLS_ERR_NET_RECV_FAILED : (int)n;
}

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    static unsigned char buf[16384];
    *len = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    return buf;
}

static void print_snap(const char *name, struct snap s) {
    printf("\"%s_bytes\": %zu, \"%s_gc_bytes\": %zu, \"%s_blocks\": %zu, ", name, s.bytes, name, s.gc, name,
        s.blocks);
}

static int fail(const char *stage, int ret) {
    char msg[160];
    mbedtls_strerror(ret, msg, sizeof(msg));
    printf("{\"ok\": false, \"stage\": \"%s\", \"error\": %d, \"message\": \"%s\"}\n", stage, ret, msg);
    return 2;
}

/* The suites MicroPython's own configuration compiles in (extmod/mbedtls/mbedtls_config_common.h:
 * ECDHE-ECDSA and RSA key exchange, AES in CBC mode; no GCM), so the broker picks what it would
 * pick for a Pico W. */
static const int mp_suites[] = {
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
    MBEDTLS_TLS_RSA_WITH_AES_256_CBC_SHA256,
    MBEDTLS_TLS_RSA_WITH_AES_128_CBC_SHA256,
    MBEDTLS_TLS_RSA_WITH_AES_256_CBC_SHA,
    MBEDTLS_TLS_RSA_WITH_AES_128_CBC_SHA,
    0,
};

/* Its curves: the SECP r1 and k1 ones, no Curve25519 (which the broker would otherwise prefer). */
static const uint16_t mp_groups[] = {
    MBEDTLS_SSL_IANA_TLS_GROUP_SECP256R1,
    MBEDTLS_SSL_IANA_TLS_GROUP_SECP384R1,
    MBEDTLS_SSL_IANA_TLS_GROUP_SECP521R1,
    MBEDTLS_SSL_IANA_TLS_GROUP_SECP256K1,
    MBEDTLS_SSL_IANA_TLS_GROUP_SECP224R1,
    MBEDTLS_SSL_IANA_TLS_GROUP_SECP192R1,
    MBEDTLS_SSL_IANA_TLS_GROUP_SECP224K1,
    MBEDTLS_SSL_IANA_TLS_GROUP_SECP192K1,
    MBEDTLS_SSL_IANA_TLS_GROUP_NONE,
};

static size_t mqtt_connect(unsigned char *out, const char *client_id) {
    size_t idlen = strlen(client_id);
    size_t rem = 10 + 2 + idlen;
    size_t i = 0;
    out[i++] = 0x10;
    out[i++] = (unsigned char)rem; /* client ids here are short: one length byte */
    const unsigned char var[] = {0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60};
    memcpy(out + i, var, sizeof(var));
    i += sizeof(var);
    out[i++] = (unsigned char)(idlen >> 8);
    out[i++] = (unsigned char)idlen;
    memcpy(out + i, client_id, idlen);
    return i + idlen;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s ADDR PORT HOSTNAME CA.der CLIENT_ID\n", argv[0]);
        return 1;
    }
    const char *addr = argv[1], *hostname = argv[3], *client_id = argv[5];
    int port = atoi(argv[2]);
    if (strlen(client_id) > 100) {
        fprintf(stderr, "client id too long\n");
        return 1;
    }
    size_t ca_len;
    const unsigned char *ca = read_file(argv[4], &ca_len);
    if (ca == NULL) {
        fprintf(stderr, "cannot read %s: %s\n", argv[4], strerror(errno));
        return 1;
    }

    /* The SSLContext. In MicroPython these structures are fields of the Python object (GC heap,
     * every port); only what mbedTLS allocates behind them is counted here. */
    static mbedtls_entropy_context entropy;
    static mbedtls_ctr_drbg_context drbg;
    static mbedtls_ssl_config conf;
    static mbedtls_x509_crt cacert;
    static mbedtls_ssl_context ssl;
    mbedtls_entropy_init(&entropy);
    mbedtls_ctr_drbg_init(&drbg);
    mbedtls_ssl_config_init(&conf);
    mbedtls_x509_crt_init(&cacert);
    const unsigned char seed[] = "mpy";
    int ret = mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy, seed, sizeof(seed));
    if (ret != 0) {
        return fail("seed", ret);
    }
    ret = mbedtls_ssl_config_defaults(&conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
        MBEDTLS_SSL_PRESET_DEFAULT);
    if (ret != 0) {
        return fail("config", ret);
    }
    mbedtls_ssl_conf_authmode(&conf, MBEDTLS_SSL_VERIFY_REQUIRED);
    mbedtls_ssl_conf_rng(&conf, mbedtls_ctr_drbg_random, &drbg);
    /* What this Debian build has and MicroPython's configuration does not: TLS 1.3 and session
     * tickets are turned off here; the suites and curves are cut to MicroPython's. */
    mbedtls_ssl_conf_max_tls_version(&conf, MBEDTLS_SSL_VERSION_TLS1_2);
    mbedtls_ssl_conf_session_tickets(&conf, MBEDTLS_SSL_SESSION_TICKETS_DISABLED);
    mbedtls_ssl_conf_ciphersuites(&conf, mp_suites);
    mbedtls_ssl_conf_groups(&conf, mp_groups);
    /* load_verify_locations(cadata): the DER parsed into the context's chain. */
    ret = mbedtls_x509_crt_parse_der(&cacert, ca, ca_len);
    if (ret != 0) {
        return fail("ca", ret);
    }
    mbedtls_ssl_conf_ca_chain(&conf, &cacert, NULL);
    struct snap context = snap_now();

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        fprintf(stderr, "cannot connect to %s:%d: %s\n", addr, port, strerror(errno));
        return 1;
    }

    /* wrap_socket: the SSL context, its record buffers, the server name, the handshake. */
    mbedtls_ssl_init(&ssl);
    recording = 1;
    ret = mbedtls_ssl_setup(&ssl, &conf);
    recording = 0;
    if (ret != 0) {
        return fail("setup", ret);
    }
    ret = mbedtls_ssl_set_hostname(&ssl, hostname);
    if (ret != 0) {
        return fail("hostname", ret);
    }
    mbedtls_ssl_set_bio(&ssl, &fd, send_cb, recv_cb, NULL);
    struct snap setup = snap_now();
    reset_peak();
    while ((ret = mbedtls_ssl_handshake(&ssl)) != 0) {
        if (ret != MBEDTLS_ERR_SSL_WANT_READ && ret != MBEDTLS_ERR_SSL_WANT_WRITE) {
            printf("{\"ok\": false, \"stage\": \"handshake\", \"error\": %d, \"verify_flags\": %u, ", ret,
                (unsigned)mbedtls_ssl_get_verify_result(&ssl));
            char msg[160];
            mbedtls_strerror(ret, msg, sizeof(msg));
            printf("\"message\": \"%s\"}\n", msg);
            return 2;
        }
    }
    struct snap handshake_peak = {peak_bytes, peak_gc, peak_blocks};
    struct snap session = snap_now();

    /* What the session holds of the server's certificate. ESP-IDF keeps it
     * (CONFIG_MBEDTLS_SSL_KEEP_PEER_CERTIFICATE, on by default); MicroPython's own configuration
     * (Pico W) does not define MBEDTLS_SSL_KEEP_PEER_CERTIFICATE and keeps only its digest. The
     * cost is measured by parsing the same DER again into a chain of its own. */
    size_t peer_cert_bytes = 0, peer_cert_gc = 0, peer_cert_blocks = 0;
    const mbedtls_x509_crt *peer = mbedtls_ssl_get_peer_cert(&ssl);
    if (peer != NULL) {
        static mbedtls_x509_crt copy;
        mbedtls_x509_crt_init(&copy);
        struct snap before = snap_now();
        if (mbedtls_x509_crt_parse_der(&copy, peer->raw.p, peer->raw.len) == 0) {
            struct snap after = snap_now();
            /* The session's chain head is itself allocated (one more block). */
            peer_cert_bytes = after.bytes - before.bytes + sizeof(mbedtls_x509_crt);
            peer_cert_gc = after.gc - before.gc + gc_cost(sizeof(mbedtls_x509_crt));
            peer_cert_blocks = after.blocks - before.blocks + 1;
        }
        mbedtls_x509_crt_free(&copy);
    }

    unsigned char pkt[128];
    size_t n = mqtt_connect(pkt, client_id);
    reset_peak();
    for (size_t off = 0; off < n;) {
        ret = mbedtls_ssl_write(&ssl, pkt + off, n - off);
        if (ret < 0) {
            return fail("write", ret);
        }
        off += (size_t)ret;
    }
    unsigned char connack[4];
    for (size_t off = 0; off < sizeof(connack);) {
        ret = mbedtls_ssl_read(&ssl, connack + off, sizeof(connack) - off);
        if (ret <= 0) {
            return fail("read", ret == 0 ? MBEDTLS_ERR_SSL_CONN_EOF : ret);
        }
        off += (size_t)ret;
    }
    struct snap mqtt_peak = {peak_bytes, peak_gc, peak_blocks};
    struct snap connected = snap_now();
    const unsigned char disconnect[] = {0xE0, 0x00};
    mbedtls_ssl_write(&ssl, disconnect, sizeof(disconnect));
    mbedtls_ssl_close_notify(&ssl);
    const char *suite = mbedtls_ssl_get_ciphersuite(&ssl);
    const char *version = mbedtls_ssl_get_version(&ssl);
    mbedtls_ssl_free(&ssl);
    close(fd);
    mbedtls_x509_crt_free(&cacert);
    mbedtls_ssl_config_free(&conf);
    mbedtls_ctr_drbg_free(&drbg);
    mbedtls_entropy_free(&entropy);

    printf("{\"ok\": true, \"mbedtls_version\": \"%s\", \"pointer_bytes\": %zu, ", MBEDTLS_VERSION_STRING,
        sizeof(void *));
    printf("\"tls_version\": \"%s\", \"ciphersuite\": \"%s\", ", version, suite);
    printf("\"connack\": [%d, %d, %d, %d], ", connack[0], connack[1], connack[2], connack[3]);
    printf("\"in_content_len\": %d, \"out_content_len\": %d, ", MBEDTLS_SSL_IN_CONTENT_LEN,
        MBEDTLS_SSL_OUT_CONTENT_LEN);
    printf("\"setup_allocs\": [");
    for (int i = 0; i < n_recorded; i++) {
        printf("%s%zu", i ? ", " : "", recorded[i]);
    }
    printf("], ");
    print_snap("context", context);
    print_snap("setup", setup);
    print_snap("handshake_peak", handshake_peak);
    print_snap("session", session);
    print_snap("mqtt_peak", mqtt_peak);
    print_snap("connected", connected);
    printf("\"peer_cert_bytes\": %zu, \"peer_cert_gc_bytes\": %zu, \"peer_cert_blocks\": %zu, ", peer_cert_bytes,
        peer_cert_gc, peer_cert_blocks);
    printf("\"largest_block\": %zu, \"left_after_free_bytes\": %zu, ", largest_block, cur_bytes);
    /* The Python objects' share (GC heap on every port), for this build's structure sizes. */
    printf("\"sizeof_ssl_context_object_fields\": %zu, \"sizeof_ssl_socket_object_fields\": %zu}\n",
        sizeof(mbedtls_entropy_context) + sizeof(mbedtls_ctr_drbg_context) + sizeof(mbedtls_ssl_config) +
        2 * sizeof(mbedtls_x509_crt) + sizeof(mbedtls_pk_context),
        sizeof(mbedtls_ssl_context));
    return 0;
}
