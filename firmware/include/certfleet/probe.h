/*
 * Port: the TLS health probe (docs/protocol.md §6): a TLS 1.2 handshake to host:port
 * that trusts only the CA chains stored in the given sec_tags, verifies the peer and
 * its hostname, and refuses a server chain over 4096 bytes.
 */
#ifndef CERTFLEET_PROBE_H_
#define CERTFLEET_PROBE_H_

#include <stddef.h>
#include <stdint.h>

#include "certfleet/reason.h"

struct cf_probe {
	void *ctx;
	/**
	 * Run the handshake. `host` is not NUL-terminated.
	 *
	 * @return CF_REASON_OK, or one of CF_REASON_UNKNOWN_CA, _EXPIRED,
	 *         _CHAIN_TOO_LARGE, _TIMEOUT, _HANDSHAKE_ERROR.
	 */
	enum cf_reason (*run)(void *ctx, const char *host, size_t host_len, uint16_t port,
			      const uint32_t *sec_tags, size_t n_tags);
};

#endif /* CERTFLEET_PROBE_H_ */
