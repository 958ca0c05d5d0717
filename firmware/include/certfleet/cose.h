/*
 * COSE_Sign1 (RFC 9052) with ES256 (RFC 9053), as the bundle envelope uses it.
 *
 * Decoding is zero-copy: every field points into the caller's buffer, which must
 * outlive the message. Verification hashes the Sig_structure as a stream through
 * PSA (psa_hash_*) and checks the raw r || s signature with psa_verify_hash, the
 * format COSE and PSA share, so no buffer holds the Sig_structure.
 */
#ifndef CERTFLEET_COSE_H_
#define CERTFLEET_COSE_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "certfleet/limits.h"

/** COSE algorithm identifier of ES256. */
#define CF_COSE_ALG_ES256 (-7)

/** A decoded COSE_Sign1; the pointers are into the decoded buffer. */
struct cf_cose_sign1 {
	const uint8_t *protected_bytes; /**< the protected header as signed (a bstr's content) */
	size_t protected_len;
	const uint8_t *payload;
	size_t payload_len;
	const uint8_t *signature; /**< CF_ES256_SIG_LEN bytes */
	bool alg_present;	  /**< the protected header carries alg (label 1) */
	bool alg_is_es256;	  /**< ... and it is the integer -7 */
	const uint8_t *kid;	  /**< the protected header's kid (label 4), or NULL */
	size_t kid_len;
	/** the protected header's delegation (label -65537, issue 17): a byte string after
	 * alg and kid, or NULL; `dlg_malformed` when the label is there in another form */
	const uint8_t *dlg;
	size_t dlg_len;
	bool dlg_malformed;
	bool other_labels; /**< a header carries a label besides alg and kid */
};

/**
 * Decode a COSE_Sign1, tagged (18) or untagged, that fills `buf` exactly.
 *
 * @retval 0 decoded: four items, header maps (labels once, none in both), a byte
 *           string payload, a 64-byte signature, nothing after it. A delegation label
 *           in the protected header other than a byte string after alg and kid sets
 *           `dlg_malformed` (the bundle is then `bad_delegation`, not `bad_envelope`).
 * @retval -EBADMSG anything else.
 */
int cf_cose_decode(const uint8_t *buf, size_t len, struct cf_cose_sign1 *msg);

/** Receives consecutive pieces of a Sig_structure; returns 0 or a negative errno. */
typedef int (*cf_cose_emit_t)(void *ctx, const uint8_t *data, size_t len);

/**
 * Emit the Sig_structure ["Signature1", protected, external_aad, payload], CBOR
 * encoded, in pieces (the part before each byte string's content, then the content).
 *
 * @return 0, or what `emit` returned first when negative.
 */
int cf_cose_sig_structure(const struct cf_cose_sign1 *msg, const uint8_t *external_aad,
			  size_t aad_len, cf_cose_emit_t emit, void *ctx);

/**
 * Verify the ES256 signature of `msg` with an uncompressed P-256 point.
 *
 * @retval 0 the signature verifies.
 * @retval -EBADMSG it does not.
 * @retval -EINVAL `pub` is not a point on P-256.
 * @retval -EIO the crypto service failed.
 */
int cf_cose_verify_es256(const struct cf_cose_sign1 *msg, const uint8_t *external_aad,
			 size_t aad_len, const uint8_t pub[CF_P256_POINT_LEN]);

/** The DER head of a P-256 SubjectPublicKeyInfo, up to and including the point's 0x04. */
#define CF_P256_SPKI_HEAD_LEN 27
extern const uint8_t cf_p256_spki_head[CF_P256_SPKI_HEAD_LEN];

/**
 * Whether `kid` is the key id of the P-256 point `pub`: the first 8 bytes of SHA-256
 * over its SubjectPublicKeyInfo DER (a fixed 26-byte prefix, then the point).
 */
bool cf_p256_kid_matches(const uint8_t kid[CF_KID_LEN], const uint8_t pub[CF_P256_POINT_LEN]);

/** Whether `pub` is an uncompressed point on P-256 (PSA imports it as a public key). */
bool cf_p256_point_valid(const uint8_t *pub, size_t len);

#endif /* CERTFLEET_COSE_H_ */
