/*
 * Port: the persisted record (NVS or settings on the nRF9160, a file on the host).
 *
 * One opaque blob, stored atomically: after a power cut `load` returns either the
 * previous blob or the new one, never a mix (NVS and a write-then-rename file give
 * this). The core writes it BEFORE each key store change it must survive.
 */
#ifndef CERTFLEET_RECORD_H_
#define CERTFLEET_RECORD_H_

#include <stddef.h>
#include <stdint.h>

struct cf_record_store {
	void *ctx;
	/** Read the blob into buf; 0 with *out_len, -ENOENT when none was stored. */
	int (*load)(void *ctx, uint8_t *buf, size_t len, size_t *out_len);
	/** Replace the blob atomically; 0 or a negative errno. */
	int (*store)(void *ctx, const uint8_t *buf, size_t len);
};

#endif /* CERTFLEET_RECORD_H_ */
