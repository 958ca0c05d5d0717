/*
 * Opening a bundle: checks 1 to 12 of docs/protocol.md §4 with 5a to 5d and 7a of a
 * delegated bundle (issue 17), in order, each with its reason code. Check 13 (does the
 * operation make sense now) needs the device's state and lives in device.c.
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
	const struct cf_signer *signers; /**< the trusted root keys */
	size_t n_signers;
	/** revoked delegations (check 5b): by the delegated key's id, or issued before */
	const uint8_t (*revoked)[CF_KID_LEN];
	size_t n_revoked;
	uint64_t revoked_before;
};

/** An opened bundle; strings and byte strings point into the received buffer. */
struct cf_bundle {
	/** the payload as decoded (generated type); when `ids_known` its rid, seq and op
	 * name the bundle in a report even when the schema refused the payload: they are
	 * then read from it best effort, as the orchestrator's model reads it, the rest
	 * zero. `op`'s value is NULL when it is not text a report can carry. */
	struct Bundle_payload p;
	uint8_t op;		 /**< enum cf_op, in a byte: with the device context and the
				  *   bundle buffer the opened bundle fits 8 KB (tools/ram_sizes.c) */
	bool verified;		 /**< the signature verified (checks 1 to 5d passed) */
	bool delegated;		 /**< signed under a delegation (not by a root key directly) */
	bool ids_known;		 /**< the bundle's rid, seq and op were read (for a rejection) */
	const char *detail;	 /**< for people: why it was refused, or "" */
};

/**
 * Run checks 1 to 12 on a received bundle (with 5a to 5d and 7a when it carries a
 * delegation).
 *
 * @return CF_REASON_OK, or the reason of the first check that failed. When
 *         `out->ids_known`, a rejection names the bundle's rid, seq and op.
 */
enum cf_reason cf_bundle_open(const uint8_t *buf, size_t len, const struct cf_bundle_env *env,
			      struct cf_bundle *out);

/** Whether a tag list holds `tag`. */
bool cf_tags_contain(const uint64_t *tags, size_t n, uint64_t tag);

#endif /* CERTFLEET_BUNDLE_H_ */
