/*
 * Port: the TLS health probe (docs/protocol.md §6): a TLS 1.2 handshake to host:port
 * that trusts only the CA chains stored in the given sec_tags, verifies the peer and
 * its hostname, and refuses a server chain over 4096 bytes. An identity stage's probe
 * also presents a client certificate: the certificate and key of one sec_tag.
 */
#ifndef CERTFLEET_PROBE_H_
#define CERTFLEET_PROBE_H_

#include <stddef.h>
#include <stdint.h>

#include "certfleet/reason.h"

struct cf_probe {
	void *ctx;
	/**
	 * Run the handshake. `host` is not NUL-terminated. `client_tag`, when not NULL,
	 * names the sec_tag whose client certificate (type 1) and key (type 2) are presented.
	 *
	 * @return CF_REASON_OK, or one of CF_REASON_UNKNOWN_CA, _EXPIRED,
	 *         _CHAIN_TOO_LARGE, _TIMEOUT, _HANDSHAKE_ERROR, and with a client
	 *         certificate _IDENTITY_REFUSED (the server answered it with a fatal alert:
	 *         bad_certificate 42, unsupported_certificate 43, certificate_revoked 44,
	 *         certificate_expired 45, unknown_ca 48, access_denied 49).
	 */
	enum cf_reason (*run)(void *ctx, const char *host, size_t host_len, uint16_t port,
			      const uint32_t *sec_tags, size_t n_tags, const uint32_t *client_tag);
};

#endif /* CERTFLEET_PROBE_H_ */
