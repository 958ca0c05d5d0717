/*
 * Phases and reason codes of device reports (docs/protocol.md §8, contract v2).
 */
#ifndef CERTFLEET_REASON_H_
#define CERTFLEET_REASON_H_

/**
 * A report's detail text, for people (docs/protocol.md §7: it may be empty). A build with
 * CF_NO_DETAILS defined leaves every detail empty and saves the strings' flash (about
 * 2.8 KB on the Cortex-M33, `make size`); reasons, phases and ops are unchanged.
 */
#ifdef CF_NO_DETAILS
#define CF_DETAIL(text) ""
#else
#define CF_DETAIL(text) text
#endif

/** Why a step ended as it did; CF_REASON_OK for success. */
enum cf_reason {
	CF_REASON_OK = 0,
	/* rejected: the bundle was refused and nothing changed */
	CF_REASON_TOO_LARGE,
	CF_REASON_BAD_ENVELOPE,
	CF_REASON_UNSUPPORTED_ALGORITHM,
	CF_REASON_UNKNOWN_KEY,
	CF_REASON_BAD_SIGNATURE,
	CF_REASON_BAD_PAYLOAD,
	CF_REASON_UNSUPPORTED_VERSION,
	CF_REASON_WRONG_DEVICE,
	CF_REASON_REPLAY,
	CF_REASON_BUNDLE_EXPIRED,
	CF_REASON_NOT_YET_VALID,
	CF_REASON_TAG_IN_USE,
	CF_REASON_NOTHING_STAGED,
	CF_REASON_INVALID_OPERATION,
	CF_REASON_UNSAFE_ACTIVE,
	CF_REASON_NOTHING_TO_UNDO,
	CF_REASON_SUPERSEDED,
	CF_REASON_MODEM_ERROR,
	CF_REASON_KEY_MISMATCH, /* identity stage: the certificate is not for the keygen's key */
	CF_REASON_BAD_DELEGATION,     /* the delegation is malformed or not the bundle key's */
	CF_REASON_DELEGATION_REVOKED, /* its kid is revoked, or it was issued before revoked_before */
	CF_REASON_DELEGATION_EXPIRED, /* now >= its exp, or its nbf is over 300 s ahead */
	CF_REASON_OUT_OF_SCOPE,	      /* the op, a credential type or the rid is not delegated */
	/* health_failed: the TLS probe with the staged trust failed */
	CF_REASON_UNKNOWN_CA,
	CF_REASON_EXPIRED,
	CF_REASON_CHAIN_TOO_LARGE,
	CF_REASON_TIMEOUT,
	CF_REASON_HANDSHAKE_ERROR,
	CF_REASON_IDENTITY_REFUSED, /* the server refused the staged client certificate */
	/* fallback: the device returned to its previous trust by itself */
	CF_REASON_COMMIT_TIMEOUT,
	CF_REASON_BROKER_UNREACHABLE,
	CF_REASON_COUNT_,
};

/** What a report says happened. */
enum cf_phase {
	CF_PHASE_RECEIVED = 0,
	CF_PHASE_REJECTED,
	CF_PHASE_STAGED,
	CF_PHASE_HEALTH_OK,
	CF_PHASE_HEALTH_FAILED,
	CF_PHASE_COMMITTED,
	CF_PHASE_FALLBACK,
	CF_PHASE_ROLLED_BACK,
	CF_PHASE_RETIRED,
	CF_PHASE_CSR, /* a keygen made its key: the report carries the CSR */
	CF_PHASE_COUNT_,
};

/** A bundle's operation; CF_OP_NONE in a report that names no bundle. */
enum cf_op {
	CF_OP_NONE = 0,
	CF_OP_STAGE,
	CF_OP_COMMIT,
	CF_OP_ROLLBACK,
	CF_OP_RETIRE,
	CF_OP_TRUST_SIGNER,
	CF_OP_KEYGEN,
	CF_OP_REVOKE, /* root only: the revoked delegated kids and revoked_before */
	CF_OP_COUNT_,
};

/** The wire name of a reason ("too_large"), or NULL when out of range. */
const char *cf_reason_str(enum cf_reason reason);
/** The wire name of a phase ("health_ok"), or NULL when out of range. */
const char *cf_phase_str(enum cf_phase phase);
/** The wire name of an op ("trust-signer"), or NULL for CF_OP_NONE and out of range. */
const char *cf_op_str(enum cf_op op);

#endif /* CERTFLEET_REASON_H_ */
