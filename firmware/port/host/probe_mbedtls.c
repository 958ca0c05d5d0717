/*
 * The host health probe (docs/protocol.md §6) with Mbed TLS: TLS 1.2, peer and
 * hostname (or address) verified, trusting only the CA chains in the probe's sec_tags.
 *
 * Like the modem, it refuses a server Certificate message over 4096 bytes whatever the
 * chain's validity: the received records are scanned as they arrive and the size is
 * decided before verification is looked at (simulator/probe.py does the same).
 *
 * An identity stage's probe presents the client certificate and key of its sec_tag (the
 * key store's files: the key is used in place, never copied out); a fatal alert the server
 * sends against that certificate is `identity_refused`. So is a connection the server
 * resets or closes once it asked for and has the client's certificate flight, the
 * server's own chain verified (docs/protocol.md §6): an OpenSSL server (Mosquitto's) sends its alert and closes with the
 * client's Finished unread, so the reset reaches the client before the alert does.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <mbedtls/asn1.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#include "host_ports.h"

#define RECORD_HANDSHAKE 22
#define RECORD_CHANGE_CIPHER_SPEC 20
#define HANDSHAKE_CERTIFICATE 11
#define SCAN_MAX (20 * 1024)

/* What the server sent before encryption, to find its Certificate message's size. */
struct scan {
	mbedtls_net_context *net;
	uint8_t records[SCAN_MAX];
	size_t len;
};

static int recv_scanned(void *ctx, unsigned char *buf, size_t len, uint32_t timeout)
{
	struct scan *scan = ctx;
	int n = mbedtls_net_recv_timeout(scan->net, buf, len, timeout);
	if (n > 0) {
		size_t room = sizeof(scan->records) - scan->len;
		size_t keep = (size_t)n < room ? (size_t)n : room;
		memcpy(scan->records + scan->len, buf, keep);
		scan->len += keep;
	}
	return n;
}

static int send_scanned(void *ctx, const unsigned char *buf, size_t len)
{
	return mbedtls_net_send(((struct scan *)ctx)->net, buf, len);
}

/* The body length of the server's Certificate message, or 0 if none was seen. */
static size_t certificate_bytes(const struct scan *scan)
{
	static _Thread_local uint8_t messages[SCAN_MAX];
	size_t n = 0, at = 0;

	while (at + 5 <= scan->len) {
		size_t len = (size_t)scan->records[at + 3] << 8 | scan->records[at + 4];
		size_t whole = at + 5 + len <= scan->len ? len : scan->len - at - 5;
		if (scan->records[at] == RECORD_CHANGE_CIPHER_SPEC) {
			break;
		}
		if (scan->records[at] == RECORD_HANDSHAKE) {
			memcpy(messages + n, scan->records + at + 5, whole);
			n += whole;
		}
		at += 5 + len;
	}
	for (at = 0; at + 4 <= n;) {
		size_t len = (size_t)messages[at + 1] << 16 | (size_t)messages[at + 2] << 8 |
			     messages[at + 3];
		if (messages[at] == HANDSHAKE_CERTIFICATE) {
			return len;
		}
		at += 4 + len;
	}
	return 0;
}

/* The CA chains of the probe's sec_tags, parsed; -ENOENT when none holds one. */
static int load_trust(struct cf_host_keystore *ks, const uint32_t *tags, size_t n,
		      mbedtls_x509_crt *trust)
{
	static _Thread_local uint8_t pem[CF_CA_CHAIN_MAX_BYTES + 1];
	size_t loaded = 0;

	for (size_t i = 0; i < n; i++) {
		size_t len = 0;
		if (cf_host_keystore_read(ks, tags[i], CF_CRED_TYPE_CA_CHAIN, pem, sizeof(pem) - 1,
					  &len) != 0) {
			continue;
		}
		pem[len] = '\0';
		if (mbedtls_x509_crt_parse(trust, pem, len + 1) == 0) {
			loaded++;
		}
	}
	return loaded > 0 ? 0 : -ENOENT;
}

/*
 * An address as the probe's host: Mbed TLS 2.28 matches names against dNSName only, so
 * the leaf's iPAddress names are read from its subjectAltName extension here.
 */
struct address {
	uint8_t bytes[16];
	size_t len; /* 4 or 16; 0 when the host is a name */
};

static bool san_holds(const mbedtls_x509_crt *crt, const struct address *addr)
{
	static const uint8_t san_oid[] = {MBEDTLS_ASN1_OID, 3, 0x55, 0x1d, 0x11};
	const uint8_t *ext = crt->v3_ext.p, *end = ext + crt->v3_ext.len;
	unsigned char *p = NULL;
	size_t len = 0;

	for (const uint8_t *at = ext; at + sizeof(san_oid) <= end; at++) {
		if (memcmp(at, san_oid, sizeof(san_oid)) == 0) {
			p = (unsigned char *)at + sizeof(san_oid);
			break;
		}
	}
	if (p == NULL) {
		return false;
	}
	if (p < end && *p == MBEDTLS_ASN1_BOOLEAN) {
		p += 3; /* critical */
	}
	if (mbedtls_asn1_get_tag(&p, end, &len, MBEDTLS_ASN1_OCTET_STRING) != 0 ||
	    mbedtls_asn1_get_tag(&p, end, &len, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0) {
		return false;
	}
	const unsigned char *names_end = p + len;
	while (p < names_end) {
		int tag = *p++;
		if (mbedtls_asn1_get_len(&p, names_end, &len) != 0) {
			return false;
		}
		if (tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_X509_SAN_IP_ADDRESS) &&
		    len == addr->len && memcmp(p, addr->bytes, len) == 0) {
			return true;
		}
		p += len;
	}
	return false;
}

static int verify_address(void *ctx, mbedtls_x509_crt *crt, int depth, uint32_t *flags)
{
	if (depth == 0 && !san_holds(crt, ctx)) {
		*flags |= MBEDTLS_X509_BADCERT_CN_MISMATCH;
	}
	return 0;
}

/* The alerts a server sends against a client certificate (RFC 5246 §7.2.2). */
static bool refuses_certificate(uint8_t alert)
{
	return alert == MBEDTLS_SSL_ALERT_MSG_BAD_CERT || alert == MBEDTLS_SSL_ALERT_MSG_UNSUPPORTED_CERT ||
	       alert == MBEDTLS_SSL_ALERT_MSG_CERT_REVOKED || alert == MBEDTLS_SSL_ALERT_MSG_CERT_EXPIRED ||
	       alert == MBEDTLS_SSL_ALERT_MSG_UNKNOWN_CA || alert == MBEDTLS_SSL_ALERT_MSG_ACCESS_DENIED;
}

/* The client certificate and key of `tag`, from the key store's files. */
static int load_identity(struct cf_host_keystore *ks, uint32_t tag, mbedtls_x509_crt *cert,
			 mbedtls_pk_context *key)
{
	char path[CF_HOST_PATH_MAX + 32];

	if (cf_host_keystore_item_path(ks, tag, CF_CRED_TYPE_CLIENT_CERT, path, sizeof(path)) != 0 ||
	    mbedtls_x509_crt_parse_file(cert, path) != 0 ||
	    cf_host_keystore_item_path(ks, tag, CF_CRED_TYPE_CLIENT_KEY, path, sizeof(path)) != 0 ||
	    mbedtls_pk_parse_keyfile(key, path, NULL) != 0) {
		return -ENOENT;
	}
	return 0;
}

static enum cf_reason verify_reason(uint32_t flags)
{
	if (flags & (MBEDTLS_X509_BADCERT_EXPIRED | MBEDTLS_X509_BADCERT_FUTURE)) {
		return CF_REASON_EXPIRED;
	}
	if (flags & MBEDTLS_X509_BADCERT_NOT_TRUSTED) {
		return CF_REASON_UNKNOWN_CA;
	}
	return CF_REASON_HANDSHAKE_ERROR; /* hostname mismatch, key usage, ... */
}

static enum cf_reason probe_run(void *ctx, const char *host, size_t host_len, uint16_t port,
				const uint32_t *tags, size_t n_tags, const uint32_t *client_tag)
{
	struct cf_host_probe *probe = ctx;
	static _Thread_local struct scan scan;
	char hostname[CF_PROBE_HOST_MAX_BYTES + 1], service[8];
	mbedtls_net_context net;
	mbedtls_entropy_context entropy;
	mbedtls_ctr_drbg_context drbg;
	mbedtls_ssl_config conf;
	mbedtls_ssl_context ssl;
	mbedtls_x509_crt trust, client_cert;
	mbedtls_pk_context client_key;
	enum cf_reason reason = CF_REASON_HANDSHAKE_ERROR;
	int ret;

	if (host_len > CF_PROBE_HOST_MAX_BYTES || memchr(host, '\0', host_len) != NULL) {
		return CF_REASON_HANDSHAKE_ERROR;
	}
	memcpy(hostname, host, host_len);
	hostname[host_len] = '\0';
	snprintf(service, sizeof(service), "%u", (unsigned)port);
	mbedtls_net_init(&net);
	mbedtls_entropy_init(&entropy);
	mbedtls_ctr_drbg_init(&drbg);
	mbedtls_ssl_config_init(&conf);
	mbedtls_ssl_init(&ssl);
	mbedtls_x509_crt_init(&trust);
	mbedtls_x509_crt_init(&client_cert);
	mbedtls_pk_init(&client_key);
	memset(&scan, 0, sizeof(scan));
	scan.net = &net;

	if (load_trust(probe->keystore, tags, n_tags, &trust) != 0) {
		reason = CF_REASON_UNKNOWN_CA; /* nothing to trust: no chain can lead to a CA */
		goto out;
	}
	if (mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy, NULL, 0) != 0 ||
	    mbedtls_ssl_config_defaults(&conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
					MBEDTLS_SSL_PRESET_DEFAULT) != 0) {
		goto out;
	}
	mbedtls_ssl_conf_min_version(&conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
	mbedtls_ssl_conf_max_version(&conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
	mbedtls_ssl_conf_authmode(&conf, MBEDTLS_SSL_VERIFY_REQUIRED);
	mbedtls_ssl_conf_ca_chain(&conf, &trust, NULL);
	mbedtls_ssl_conf_rng(&conf, mbedtls_ctr_drbg_random, &drbg);
	mbedtls_ssl_conf_read_timeout(&conf, probe->timeout_ms);
	if (client_tag != NULL &&
	    (load_identity(probe->keystore, *client_tag, &client_cert, &client_key) != 0 ||
	     mbedtls_ssl_conf_own_cert(&conf, &client_cert, &client_key) != 0)) {
		goto out; /* no certificate and key to present: the handshake cannot be tried */
	}
	static _Thread_local struct address addr;
	addr.len = inet_pton(AF_INET, hostname, addr.bytes) == 1	   ? 4
		   : inet_pton(AF_INET6, hostname, addr.bytes) == 1 ? 16
								    : 0;
	if (addr.len > 0) {
		mbedtls_ssl_conf_verify(&conf, verify_address, &addr);
	}
	if (mbedtls_ssl_setup(&ssl, &conf) != 0 ||
	    (addr.len == 0 && mbedtls_ssl_set_hostname(&ssl, hostname) != 0)) {
		goto out;
	}
	if (mbedtls_net_connect(&net, hostname, service, MBEDTLS_NET_PROTO_TCP) != 0) {
		goto out; /* refused, unreachable, no such host */
	}
	mbedtls_ssl_set_bio(&ssl, &scan, send_scanned, NULL, recv_scanned);
	do {
		ret = mbedtls_ssl_handshake(&ssl);
	} while (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE);

	if (certificate_bytes(&scan) > CF_CA_CHAIN_MAX_BYTES) {
		reason = CF_REASON_CHAIN_TOO_LARGE;
	} else if (ret == 0) {
		reason = CF_REASON_OK;
		mbedtls_ssl_close_notify(&ssl);
	} else if (ret == MBEDTLS_ERR_SSL_TIMEOUT) {
		reason = CF_REASON_TIMEOUT;
	} else if (ret == MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE && client_tag != NULL &&
		   ssl.in_msg != NULL && refuses_certificate(ssl.in_msg[1])) {
		reason = CF_REASON_IDENTITY_REFUSED;
	} else if ((ret == MBEDTLS_ERR_NET_CONN_RESET || ret == MBEDTLS_ERR_SSL_CONN_EOF) &&
		   client_tag != NULL && ssl.client_auth && ssl.state > MBEDTLS_SSL_CLIENT_CERTIFICATE &&
		   mbedtls_ssl_get_verify_result(&ssl) == 0) {
		reason = CF_REASON_IDENTITY_REFUSED; /* refused, its alert lost to the reset */
	} else if (ret == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
		reason = verify_reason(mbedtls_ssl_get_verify_result(&ssl));
	}
out:
	mbedtls_ssl_free(&ssl);
	mbedtls_ssl_config_free(&conf);
	mbedtls_ctr_drbg_free(&drbg);
	mbedtls_entropy_free(&entropy);
	mbedtls_x509_crt_free(&trust);
	mbedtls_x509_crt_free(&client_cert);
	mbedtls_pk_free(&client_key);
	mbedtls_net_free(&net);
	return reason;
}

struct cf_probe cf_host_probe_port(struct cf_host_probe *probe)
{
	return (struct cf_probe){probe, probe_run};
}
