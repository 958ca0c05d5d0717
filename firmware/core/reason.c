/*
 * Wire names of reasons, phases and ops: the strings docs/protocol.md §8 defines.
 */
#include <stddef.h>

#include "certfleet/reason.h"

static const char *const reason_names[] = {
	[CF_REASON_OK] = "ok",
	[CF_REASON_TOO_LARGE] = "too_large",
	[CF_REASON_BAD_ENVELOPE] = "bad_envelope",
	[CF_REASON_UNSUPPORTED_ALGORITHM] = "unsupported_algorithm",
	[CF_REASON_UNKNOWN_KEY] = "unknown_key",
	[CF_REASON_BAD_SIGNATURE] = "bad_signature",
	[CF_REASON_BAD_PAYLOAD] = "bad_payload",
	[CF_REASON_UNSUPPORTED_VERSION] = "unsupported_version",
	[CF_REASON_WRONG_DEVICE] = "wrong_device",
	[CF_REASON_REPLAY] = "replay",
	[CF_REASON_BUNDLE_EXPIRED] = "bundle_expired",
	[CF_REASON_NOT_YET_VALID] = "not_yet_valid",
	[CF_REASON_TAG_IN_USE] = "tag_in_use",
	[CF_REASON_NOTHING_STAGED] = "nothing_staged",
	[CF_REASON_INVALID_OPERATION] = "invalid_operation",
	[CF_REASON_UNSAFE_ACTIVE] = "unsafe_active",
	[CF_REASON_NOTHING_TO_UNDO] = "nothing_to_undo",
	[CF_REASON_SUPERSEDED] = "superseded",
	[CF_REASON_MODEM_ERROR] = "modem_error",
	[CF_REASON_KEY_MISMATCH] = "key_mismatch",
	[CF_REASON_BAD_DELEGATION] = "bad_delegation",
	[CF_REASON_DELEGATION_REVOKED] = "delegation_revoked",
	[CF_REASON_DELEGATION_EXPIRED] = "delegation_expired",
	[CF_REASON_OUT_OF_SCOPE] = "out_of_scope",
	[CF_REASON_UNKNOWN_CA] = "unknown_ca",
	[CF_REASON_EXPIRED] = "expired",
	[CF_REASON_CHAIN_TOO_LARGE] = "chain_too_large",
	[CF_REASON_TIMEOUT] = "timeout",
	[CF_REASON_HANDSHAKE_ERROR] = "handshake_error",
	[CF_REASON_IDENTITY_REFUSED] = "identity_refused",
	[CF_REASON_COMMIT_TIMEOUT] = "commit_timeout",
	[CF_REASON_BROKER_UNREACHABLE] = "broker_unreachable",
};
_Static_assert(sizeof(reason_names) / sizeof(reason_names[0]) == CF_REASON_COUNT_,
	       "every reason has a wire name");

static const char *const phase_names[] = {
	[CF_PHASE_RECEIVED] = "received",	  [CF_PHASE_REJECTED] = "rejected",
	[CF_PHASE_STAGED] = "staged",		  [CF_PHASE_HEALTH_OK] = "health_ok",
	[CF_PHASE_HEALTH_FAILED] = "health_failed", [CF_PHASE_COMMITTED] = "committed",
	[CF_PHASE_FALLBACK] = "fallback",	  [CF_PHASE_ROLLED_BACK] = "rolled_back",
	[CF_PHASE_RETIRED] = "retired",	  [CF_PHASE_CSR] = "csr",
};
_Static_assert(sizeof(phase_names) / sizeof(phase_names[0]) == CF_PHASE_COUNT_,
	       "every phase has a wire name");

static const char *const op_names[] = {
	[CF_OP_NONE] = NULL,
	[CF_OP_STAGE] = "stage",
	[CF_OP_COMMIT] = "commit",
	[CF_OP_ROLLBACK] = "rollback",
	[CF_OP_RETIRE] = "retire",
	[CF_OP_TRUST_SIGNER] = "trust-signer",
	[CF_OP_KEYGEN] = "keygen",
	[CF_OP_REVOKE] = "revoke",
};
_Static_assert(sizeof(op_names) / sizeof(op_names[0]) == CF_OP_COUNT_, "every op has a name");

const char *cf_reason_str(enum cf_reason reason)
{
	return (unsigned)reason < CF_REASON_COUNT_ ? reason_names[reason] : NULL;
}

const char *cf_phase_str(enum cf_phase phase)
{
	return (unsigned)phase < CF_PHASE_COUNT_ ? phase_names[phase] : NULL;
}

const char *cf_op_str(enum cf_op op)
{
	return (unsigned)op < CF_OP_COUNT_ ? op_names[op] : NULL;
}
