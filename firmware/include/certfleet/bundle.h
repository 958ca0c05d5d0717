/*
 * Opening a bundle: checks 1 to 12 of docs/protocol.md §4, in order, each with its
 * reason code. Check 13 (does the operation make sense now) needs the device's
 * state and lives in device.c.
 */
#ifndef CERTFLEET_BUNDLE_H_
#define CERTFLEET_BUNDLE_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bundle_decode_types.h"
#include "certfleet/limits.h"
#include "certfleet/reason.h"

_Static_assert(DEFAULT_MAX_QTY == CF_TAG_LIST_MAX, "generated tag lists hold CF_TAG_LIST_MAX");
_Static_assert(sizeof(((struct Bundle_payload_creds_r *)0)->Bundle_payload_creds_Credential_m) /
			       sizeof(struct Credential) ==
		       CF_CREDS_MAX,
	       "generated creds hold CF_CREDS_MAX");

/** A signer key the device trusts. */
struct cf_signer {
	uint8_t kid[CF_KID_LEN];
	uint8_t pub[CF_P256_POINT_LEN];
};

/** What the checks compare a bundle with. */
struct cf_bundle_env {
	const char *device_id; /**< NUL-terminated */
	uint64_t last_seq;
	uint64_t now; /**< device clock, epoch seconds */
	const struct cf_signer *signers;
	size_t n_signers;
};

/** An opened bundle; strings and byte strings point into the received buffer. */
struct cf_bundle {
	struct Bundle_payload p; /**< the payload as decoded (generated type) */
	enum cf_op op;
	bool verified;		 /**< the signature verified (checks 1 to 5 passed) */
	bool ids_known;		 /**< the bundle's rid, seq and op were read (for a rejection) */
	struct zcbor_string named_rid; /**< what a report names: read from the payload, even */
	uint64_t named_seq;	       /**< from one the schema refused (best effort, as the */
	struct zcbor_string named_op;  /**< orchestrator's model reads it) */
	const char *detail;	 /**< for people: why it was refused, or "" */
};

/**
 * Run checks 1 to 12 on a received bundle.
 *
 * @return CF_REASON_OK, or the reason of the first check that failed. When
 *         `out->ids_known`, a rejection names the bundle's rid, seq and op.
 */
enum cf_reason cf_bundle_open(const uint8_t *buf, size_t len, const struct cf_bundle_env *env,
			      struct cf_bundle *out);

/** Whether a tag list holds `tag`. */
bool cf_tags_contain(const uint64_t *tags, size_t n, uint64_t tag);

#endif /* CERTFLEET_BUNDLE_H_ */
