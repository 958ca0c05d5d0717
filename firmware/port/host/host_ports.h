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

#include <mbedtls/pk.h>

#include "certfleet/clock.h"
#include "certfleet/keystore.h"
#include "certfleet/message.h"
#include "certfleet/probe.h"
#include "certfleet/record.h"

/** Room for all items together, as the simulator's modem gives (the real figure varies). */
#define CF_HOST_KEYSTORE_CAPACITY (32 * 1024)
#define CF_HOST_PATH_MAX 192

/** The fleet seed of the attestation keys when none is given (the simulator's default). */
#define CF_HOST_FLEET_SEED "certfleet"
#define CF_HOST_SEED_MAX 64

/** A key store in a directory: one file per (sec_tag, type). Starts offline, as a modem. */
struct cf_host_keystore {
	char dir[CF_HOST_PATH_MAX];
	bool online;
	size_t capacity;
	char device_id[CF_DEVICE_ID_MAX + 1]; /**< whose modem: named in the attestation */
	char fleet_seed[CF_HOST_SEED_MAX + 1]; /**< derives the attestation key */
};

/** Use (and create) `dir`; -ENAMETOOLONG or a negative errno from mkdir. */
int cf_host_keystore_init(struct cf_host_keystore *ks, const char *dir);
/** The key store port over `ks` (its keygen is cf_host_keystore_keygen). */
struct cf_keystore cf_host_keystore_port(struct cf_host_keystore *ks);
/** Name the modem's device and fleet seed (the attestation key); -ENAMETOOLONG. */
int cf_host_keystore_attestation(struct cf_host_keystore *ks, const char *device_id,
				 const char *fleet_seed);
/** %KEYGEN with a random P-256 key (the port's `keygen`; `ctx` is the key store). */
int cf_host_keystore_keygen(void *ctx, uint32_t tag, const char *subject, size_t subject_len,
			    uint64_t seq, char *out, size_t len, size_t *out_len);
/** %KEYGEN with the given P-256 key (tests that need a known key use it). */
int cf_host_keystore_keygen_with(struct cf_host_keystore *ks, uint32_t tag, const char *subject,
				 size_t subject_len, uint64_t seq, mbedtls_pk_context *key,
				 char *out, size_t len, size_t *out_len);
/**
 * The file of an item, for the TLS stacks on this host that present (tag, 1) and (tag, 2)
 * as the client certificate and key, as the modem's socket uses its own key in place.
 *
 * @retval -ENOENT no such item.
 */
int cf_host_keystore_item_path(const struct cf_host_keystore *ks, uint32_t sec_tag, uint8_t type,
			       char *out, size_t len);
/** The attestation public key (uncompressed point) and kid of `device_id` under `seed`. */
int cf_host_attestation_public(const char *seed, const char *device_id,
			       uint8_t point[CF_P256_POINT_LEN], uint8_t kid[CF_KID_LEN]);
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
