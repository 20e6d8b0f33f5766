// The system's OpenSSL 3 (Debian: libssl-dev) for GNetTLS, with the few macros of its API
// wrapped as functions Swift can call.
#ifndef C_OPENSSL_H
#define C_OPENSSL_H

#include <sys/types.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

static inline long cgnet_ssl_ctx_set_servername_callback(SSL_CTX *ctx, int (*cb)(SSL *, int *, void *)) {
    return SSL_CTX_set_tlsext_servername_callback(ctx, cb);
}
static inline long cgnet_ssl_ctx_set_servername_arg(SSL_CTX *ctx, void *arg) {
    return SSL_CTX_set_tlsext_servername_arg(ctx, arg);
}
static inline long cgnet_ssl_set_host_name(SSL *ssl, const char *name) {
    return SSL_set_tlsext_host_name(ssl, name);
}
static inline long cgnet_ssl_ctx_set_min_proto_version(SSL_CTX *ctx, int version) {
    return SSL_CTX_set_min_proto_version(ctx, version);
}
static inline long cgnet_ssl_ctx_set_max_proto_version(SSL_CTX *ctx, int version) {
    return SSL_CTX_set_max_proto_version(ctx, version);
}
static inline long cgnet_ssl_ctx_set_session_cache_mode(SSL_CTX *ctx, long mode) {
    return SSL_CTX_set_session_cache_mode(ctx, mode);
}
static inline long cgnet_ssl_ctx_set_mode(SSL_CTX *ctx, long mode) {
    return SSL_CTX_set_mode(ctx, mode);
}
static inline void cgnet_bio_set_retry_read(BIO *bio) { BIO_set_retry_read(bio); }
static inline void cgnet_bio_clear_retry_flags(BIO *bio) { BIO_clear_retry_flags(bio); }
static inline int cgnet_tls1_2_version(void) { return TLS1_2_VERSION; }
static inline int cgnet_tls1_3_version(void) { return TLS1_3_VERSION; }
static inline long cgnet_ssl_ctx_sess_number(SSL_CTX *ctx) { return SSL_CTX_sess_number(ctx); }
static inline uint64_t cgnet_ssl_op_no_ticket(void) { return SSL_OP_NO_TICKET; }
static inline long cgnet_ssl_ctx_set_num_tickets(SSL_CTX *ctx, size_t n) { return SSL_CTX_set_num_tickets(ctx, n); }

#endif
