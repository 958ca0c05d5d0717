/*
 * The limits of the device contract (docs/protocol.md, contract v2), in one place.
 *
 * Every buffer of the core is sized from these; each is enforced by the core and
 * tested at its boundary (the limit passes, one more is refused with its reason).
 */
#ifndef CERTFLEET_LIMITS_H_
#define CERTFLEET_LIMITS_H_

/** A whole COSE_Sign1 as received; larger is `too_large` before decoding. Contract v2
 * lowered it from v1's 12288 so that the received bundle's buffer, the device context
 * and the opened bundle fit 8 KB of RAM; the largest bundle certfleet builds is 4770. */
#define CF_BUNDLE_MAX_BYTES 6144
/** A CA chain item (type 0): the PEM bytes written to the modem; more is `too_large`. */
#define CF_CA_CHAIN_MAX_BYTES 4096
/** The device id (`dev`): 1 to 64 characters of A-Z a-z 0-9 . _ : - */
#define CF_DEVICE_ID_MAX 64
/** The rollout id (`rid`): UTF-8, may be empty. */
#define CF_RID_MAX_BYTES 64
/** A report's `rollout_id` and `op` as the report schema bounds them: a rejection names
 * what a signed payload said even past the bundle's own limits (best effort, §4). */
#define CF_REPORT_RID_MAX_BYTES 128
#define CF_REPORT_OP_MAX_BYTES 32
/** Entries of `creds`, one per credential type. */
#define CF_CREDS_MAX 4
/** `probe.host`. */
#define CF_PROBE_HOST_MAX_BYTES 253
/** `probe.tags`, `active`, `tags`: distinct sec_tags; a modem socket takes 7. */
#define CF_TAG_LIST_MAX 7
/** Signer keys a device trusts at once. */
#define CF_SIGNERS_MAX 4
/** A report's `detail`, truncated by the device. */
#define CF_DETAIL_MAX_BYTES 1024
/** How far ahead of the device clock a bundle's `iat` may lie. */
#define CF_CLOCK_SKEW_SECONDS 300
/** The largest sec_tag (above it the modem reserves the range). */
#define CF_SEC_TAG_MAX 2147483647u
/** A signer key id: the first 8 bytes of SHA-256 over the key's SubjectPublicKeyInfo. */
#define CF_KID_LEN 8
/** An uncompressed P-256 point: 0x04 || x || y. */
#define CF_P256_POINT_LEN 65
/** An ES256 signature in COSE: r || s. */
#define CF_ES256_SIG_LEN 64
/** Bundle payload versions this device accepts (`v`); it speaks the highest. */
#define CF_VERSION_MIN 1
#define CF_VERSION_MAX 2
/** A client certificate item (type 1) of an identity stage: counted like a CA chain. */
#define CF_CERT_ITEM_MAX_BYTES 4096
/** A keygen's `subject`: UTF-8 bytes of the CSR's common name. */
#define CF_SUBJECT_MAX_BYTES 64
/** A `csr` report's `csr`: base64url(CSR DER) "." base64url(COSE_Sign1), no padding. */
#define CF_CSR_FIELD_MAX_BYTES 2048
/** Credential types: 0 CA chain, 1 client certificate, 2 client key ... 5 public key. */
#define CF_CRED_TYPE_CA_CHAIN 0
#define CF_CRED_TYPE_CLIENT_CERT 1
#define CF_CRED_TYPE_CLIENT_KEY 2
#define CF_CRED_TYPE_MAX 5
/** A delegation (issue 17): the whole COSE_Sign1 in a bundle's protected header under
 * label -65537; larger is `bad_delegation`. Without `rids` one is about 200 bytes. */
#define CF_DELEGATION_MAX_BYTES 640
/** The private-use protected header label that carries a delegation ("dlg"). */
#define CF_DELEGATION_LABEL (-65537)
/** The delegation payload's format version (`v`). */
#define CF_DELEGATION_VERSION 1
/** A delegation's `rids`: at most this many rollout ids. */
#define CF_DELEGATION_RIDS_MAX 4
/** Revoked delegated key ids a device keeps (a `revoke` names at most this many). */
#define CF_REVOKED_KIDS_MAX 8

#endif /* CERTFLEET_LIMITS_H_ */
