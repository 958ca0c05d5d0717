/*
 * Port: the modem's key store (modem_key_mgmt / AT%CMNG on the nRF9160).
 *
 * The store has the modem's rules: writes and deletes only while offline
 * (-EPERM otherwise), one item per (sec_tag, type) (-EALREADY), a full store
 * (-ENOMEM), content it refuses (-EINVAL). The core writes only while offline and
 * deletes before it writes.
 */
#ifndef CERTFLEET_KEYSTORE_H_
#define CERTFLEET_KEYSTORE_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cf_keystore {
	void *ctx;
	/** CFUN=4 (false) or CFUN=1 (true); 0 or a negative errno. */
	int (*set_online)(void *ctx, bool online);
	/** Store one item; 0 or -EPERM, -EALREADY, -ENOMEM, -EINVAL. */
	int (*write)(void *ctx, uint32_t sec_tag, uint8_t type, const uint8_t *data, size_t len);
	/** Delete one item; 0, -ENOENT if absent, or -EPERM while online. */
	int (*remove)(void *ctx, uint32_t sec_tag, uint8_t type);
	/** Whether an item exists; 0 or a negative errno. */
	int (*exists)(void *ctx, uint32_t sec_tag, uint8_t type, bool *exists);
	/** SHA-256 of an item's bytes (AT%CMNG=1); 0, -ENOENT or a negative errno. */
	int (*digest)(void *ctx, uint32_t sec_tag, uint8_t type, uint8_t digest[32]);
};

#endif /* CERTFLEET_KEYSTORE_H_ */
