/*
 * The host port's key store, record and clock: files and the system clock, with the
 * nRF9160's rules (the model is simulator/modem.py), so a host device refuses what a
 * modem refuses.
 */
#ifndef CERTFLEET_HOST_PORTS_H_
#define CERTFLEET_HOST_PORTS_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "certfleet/clock.h"
#include "certfleet/keystore.h"
#include "certfleet/message.h"
#include "certfleet/probe.h"
#include "certfleet/record.h"

/** Room for all items together, as the simulator's modem gives (the real figure varies). */
#define CF_HOST_KEYSTORE_CAPACITY (32 * 1024)
#define CF_HOST_PATH_MAX 192

/** A key store in a directory: one file per (sec_tag, type). Starts offline, as a modem. */
struct cf_host_keystore {
	char dir[CF_HOST_PATH_MAX];
	bool online;
	size_t capacity;
};

/** Use (and create) `dir`; -ENAMETOOLONG or a negative errno from mkdir. */
int cf_host_keystore_init(struct cf_host_keystore *ks, const char *dir);
/** The key store port over `ks`. */
struct cf_keystore cf_host_keystore_port(struct cf_host_keystore *ks);
/**
 * Read a certificate item back (`modem_key_mgmt_read`: certificate types only).
 *
 * @retval 0 read, *out_len bytes.
 * @retval -ENOENT no such item. @retval -EPERM not a certificate type.
 * @retval -ENOMEM `len` is too small.
 */
int cf_host_keystore_read(struct cf_host_keystore *ks, uint32_t sec_tag, uint8_t type,
			  uint8_t *buf, size_t len, size_t *out_len);
/** `AT%CMNG=1` with `AT%CERTEXPIRY`: every item by (sec_tag, type); -ENOSPC past `max`. */
int cf_host_keystore_list(struct cf_host_keystore *ks, struct cf_state_item *items, size_t max,
			  size_t *n);

/** The TLS health probe over Mbed TLS, trusting CA chains read from `keystore`. */
struct cf_host_probe {
	struct cf_host_keystore *keystore;
	uint32_t timeout_ms; /**< for the whole handshake's reads */
};

struct cf_probe cf_host_probe_port(struct cf_host_probe *probe);

/** A record in one file, replaced by write, fsync and rename. */
struct cf_host_record {
	char path[CF_HOST_PATH_MAX];
};

int cf_host_record_init(struct cf_host_record *record, const char *path);
struct cf_record_store cf_host_record_port(struct cf_host_record *record);

/** The system clock (UTC seconds). */
struct cf_clock cf_host_clock(void);

#endif /* CERTFLEET_HOST_PORTS_H_ */
