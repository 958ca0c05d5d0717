/*
 * nRF9160 ports of the certfleet core; see ncs_ports.h. Thin glue: every decision is
 * the core's, which is built and tested on the host. This file is not compiled on the
 * project's machines (no nRF Connect SDK there): read it as a starting point that a
 * firmware team builds and tests on hardware.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <date_time.h>
#include <modem/lte_lc.h>
#include <modem/modem_key_mgmt.h>
#include <nrf_modem_at.h>
#include <zephyr/kernel.h>
#include <zephyr/net/socket.h>
#include <zephyr/settings/settings.h>

#include "certfleet/limits.h"
#include "ncs_ports.h"

/* ------------------------------------------------------------ key store */

static int ks_set_online(void *ctx, bool online)
{
	ARG_UNUSED(ctx);
	return lte_lc_func_mode_set(online ? LTE_LC_FUNC_MODE_NORMAL : LTE_LC_FUNC_MODE_OFFLINE);
}

static int ks_write(void *ctx, uint32_t tag, uint8_t type, const uint8_t *data, size_t len)
{
	ARG_UNUSED(ctx);
	return modem_key_mgmt_write(tag, (enum modem_key_mgmt_cred_type)type, data, len);
}

static int ks_remove(void *ctx, uint32_t tag, uint8_t type)
{
	ARG_UNUSED(ctx);
	return modem_key_mgmt_delete(tag, (enum modem_key_mgmt_cred_type)type);
}

static int ks_exists(void *ctx, uint32_t tag, uint8_t type, bool *exists)
{
	ARG_UNUSED(ctx);
	return modem_key_mgmt_exists(tag, (enum modem_key_mgmt_cred_type)type, exists);
}

static int ks_digest(void *ctx, uint32_t tag, uint8_t type, uint8_t digest[32])
{
	ARG_UNUSED(ctx);
	return modem_key_mgmt_digest(tag, (enum modem_key_mgmt_cred_type)type, digest, 32);
}

/*
 * AT%KEYGEN=<sec_tag>,2,0,"CN=<subject>": the modem makes a P-256 key in (sec_tag, 2) and
 * answers `%KEYGEN: "<base64url CSR>.<base64url COSE_Sign1>"` (needs CFUN=4, the core
 * is offline here). The answer is copied out of its quotes; a CME error is mapped to
 * the errno the core reports (519: the slot is taken).
 */
static int ks_keygen(void *ctx, uint32_t tag, const char *subject, size_t subject_len,
		     uint64_t seq, char *out, size_t len, size_t *out_len)
{
	ARG_UNUSED(ctx);
	ARG_UNUSED(seq); /* the modem's attestation carries its own fields */
	static char response[CF_CSR_FIELD_MAX_BYTES + 32];

	if (subject_len > CF_SUBJECT_MAX_BYTES || memchr(subject, '"', subject_len) != NULL) {
		return -EINVAL;
	}
	int err = nrf_modem_at_cmd(response, sizeof(response), "AT%%KEYGEN=%u,2,0,\"CN=%.*s\"",
				   (unsigned)tag, (int)subject_len, subject);
	if (err != 0) {
		return err > 0 && nrf_modem_at_err(err) == 519 ? -EALREADY : err > 0 ? -EIO : err;
	}
	const char *start = strchr(response, '"');
	const char *end = start != NULL ? strchr(start + 1, '"') : NULL;
	if (end == NULL) {
		return -EBADMSG;
	}
	size_t n = (size_t)(end - start - 1);
	if (n >= len) {
		return -ENOSPC;
	}
	memcpy(out, start + 1, n);
	out[n] = '\0';
	*out_len = n;
	return 0;
}

struct cf_keystore cf_ncs_keystore(void)
{
	return (struct cf_keystore){NULL,      ks_set_online, ks_write, ks_remove,
				    ks_exists, ks_digest,     ks_keygen};
}

/* ------------------------------------------------------------ record */

struct record_read {
	uint8_t *buf;
	size_t cap;
	size_t len;
	bool found;
};

static int record_read_cb(const char *key, size_t len, settings_read_cb read_cb, void *cb_arg,
			  void *param)
{
	struct record_read *r = param;

	if (key != NULL && key[0] != '\0') {
		return 0; /* only the subtree's own value */
	}
	if (len > r->cap) {
		return -ENOMEM;
	}
	ssize_t n = read_cb(cb_arg, r->buf, len);
	if (n < 0) {
		return (int)n;
	}
	r->len = (size_t)n;
	r->found = true;
	return 0;
}

static int record_load(void *ctx, uint8_t *buf, size_t len, size_t *out_len)
{
	ARG_UNUSED(ctx);
	struct record_read r = {buf, len, 0, false};
	int err = settings_load_subtree_direct(CONFIG_CERTFLEET_SETTINGS_KEY, record_read_cb, &r);

	if (err != 0) {
		return err;
	}
	*out_len = r.len;
	return r.found ? 0 : -ENOENT;
}

static int record_store(void *ctx, const uint8_t *buf, size_t len)
{
	ARG_UNUSED(ctx);
	/* NVS writes an entry whole or not at all: the old record survives a power cut */
	return settings_save_one(CONFIG_CERTFLEET_SETTINGS_KEY, buf, len);
}

struct cf_record_store cf_ncs_record(void)
{
	return (struct cf_record_store){NULL, record_load, record_store};
}

/* ------------------------------------------------------------ clock */

static uint64_t clock_now(void *ctx)
{
	ARG_UNUSED(ctx);
	int64_t ms = 0;

	/* without a network time the device cannot judge exp and iat: 0 refuses them all */
	return date_time_now(&ms) == 0 && ms > 0 ? (uint64_t)(ms / 1000) : 0;
}

struct cf_clock cf_ncs_clock(void)
{
	return (struct cf_clock){NULL, clock_now};
}

/* ------------------------------------------------------------ probe */

static enum cf_reason probe_run(void *ctx, const char *host, size_t host_len, uint16_t port,
				const uint32_t *tags, size_t n_tags, const uint32_t *client_tag)
{
	ARG_UNUSED(ctx);
	char name[CF_PROBE_HOST_MAX_BYTES + 1], service[8];
	sec_tag_t sec_tags[CF_TAG_LIST_MAX + 1];
	struct zsock_addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
	struct zsock_addrinfo *addr = NULL;
	struct zsock_timeval timeout = {
		.tv_sec = CONFIG_CERTFLEET_PROBE_TIMEOUT_MS / 1000,
		.tv_usec = (CONFIG_CERTFLEET_PROBE_TIMEOUT_MS % 1000) * 1000,
	};
	int verify = TLS_PEER_VERIFY_REQUIRED;
	enum cf_reason reason = CF_REASON_HANDSHAKE_ERROR;

	if (host_len > CF_PROBE_HOST_MAX_BYTES || n_tags > CF_TAG_LIST_MAX) {
		return CF_REASON_HANDSHAKE_ERROR;
	}
	memcpy(name, host, host_len);
	name[host_len] = '\0';
	snprintf(service, sizeof(service), "%u", port);
	for (size_t i = 0; i < n_tags; i++) {
		sec_tags[i] = (sec_tag_t)tags[i];
	}
	if (client_tag != NULL) {
		/* the modem presents the client certificate and key of a listed sec_tag */
		sec_tags[n_tags++] = (sec_tag_t)*client_tag;
	}
	if (zsock_getaddrinfo(name, service, &hints, &addr) != 0) {
		return CF_REASON_HANDSHAKE_ERROR;
	}
	int fd = zsock_socket(addr->ai_family, SOCK_STREAM, IPPROTO_TLS_1_2);
	if (fd >= 0 &&
	    zsock_setsockopt(fd, SOL_TLS, TLS_SEC_TAG_LIST, sec_tags, n_tags * sizeof(sec_tag_t)) == 0 &&
	    zsock_setsockopt(fd, SOL_TLS, TLS_HOSTNAME, name, host_len) == 0 &&
	    zsock_setsockopt(fd, SOL_TLS, TLS_PEER_VERIFY, &verify, sizeof(verify)) == 0 &&
	    zsock_setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout)) == 0 &&
	    zsock_setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout)) == 0) {
		/* the modem runs the handshake in connect() */
		if (zsock_connect(fd, addr->ai_addr, addr->ai_addrlen) == 0) {
			reason = CF_REASON_OK;
		} else if (errno == ETIMEDOUT || errno == EAGAIN) {
			reason = CF_REASON_TIMEOUT;
		}
		/* Other errnos do not say unknown_ca, expired or chain_too_large apart; the
		 * modem's handshake result would (see README.md): handshake_error until then.
		 * Nor does the socket tell a server's alert against the client certificate
		 * (identity_refused) from other failures: ECONNREFUSED/ECONNRESET after a
		 * client certificate is the nearest sign, taken as identity_refused. */
		else if (client_tag != NULL && (errno == ECONNREFUSED || errno == ECONNRESET)) {
			reason = CF_REASON_IDENTITY_REFUSED;
		}
	}
	if (fd >= 0) {
		zsock_close(fd);
	}
	zsock_freeaddrinfo(addr);
	return reason;
}

struct cf_probe cf_ncs_probe(void)
{
	return (struct cf_probe){NULL, probe_run};
}
