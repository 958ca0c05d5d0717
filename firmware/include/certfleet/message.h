/*
 * The device's JSON messages (docs/protocol.md §2 and §7), written into a caller's
 * buffer: no heap, no printf, the lengths bounded by the contract's limits.
 */
#ifndef CERTFLEET_MESSAGE_H_
#define CERTFLEET_MESSAGE_H_

#include <stddef.h>
#include <stdint.h>

#include "certfleet/device.h"

/* Worst case: every rid, op and detail byte a 6-byte \u escape; a `csr` report's field
 * (base64url and one '.', never escaped). */
#define CF_REPORT_JSON_MAX                                                                         \
	(256 + CF_DEVICE_ID_MAX + 6 * CF_REPORT_RID_MAX_BYTES + 6 * CF_REPORT_OP_MAX_BYTES +       \
	 6 * CF_REPORT_DETAIL_LEN + 11 * CF_TAG_LIST_MAX + 8 + CF_CSR_FIELD_MAX_BYTES)

/** One stored item as the state message lists it (`AT%CMNG=1`, `AT%CERTEXPIRY`). */
struct cf_state_item {
	uint32_t sec_tag;
	uint8_t type;
	uint8_t sha256[32];
	uint64_t not_after; /**< epoch seconds; 0 when unknown or not a certificate */
	const char *pem;    /**< a certificate item's text (`modem_key_mgmt_read`), or NULL */
	size_t pem_len;
};

/** The largest state message for `n` items (none with a `pem`). */
#define CF_STATE_JSON_MAX(n) (184 + CF_DEVICE_ID_MAX + 11 * CF_TAG_LIST_MAX + (n) * 150)
/** What one item's `pem` of `len` bytes adds at most (every byte a 6-byte escape). */
#define CF_STATE_PEM_JSON_MAX(len) (10 + 6 * (len))

/**
 * Write a report message.
 *
 * @retval 0 written, *out_len bytes, no NUL counted.
 * @retval -ENOSPC `len` is too small.
 */
int cf_report_json(const struct cf_report *report, const char *device_id, char *buf, size_t len,
		   size_t *out_len);

/**
 * Write a state message: the key store's items, the active tag list and the identity
 * tag (NULL: the device has none), at `time`.
 *
 * @retval 0 written, *out_len bytes.
 * @retval -ENOSPC `len` is too small.
 */
int cf_state_json(const char *device_id, uint64_t time, const struct cf_state_item *items,
		  size_t n_items, const uint32_t *active, size_t n_active, const uint32_t *identity,
		  char *buf, size_t len, size_t *out_len);

/** RFC 3339 UTC time of epoch seconds: "YYYY-MM-DDTHH:MM:SSZ" and a NUL (21 bytes). */
void cf_rfc3339(uint64_t epoch, char out[21]);

#endif /* CERTFLEET_MESSAGE_H_ */
