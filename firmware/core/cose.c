/*
 * COSE_Sign1 decoding on the generated decoder, Sig_structure hashing and ES256
 * verification through PSA Crypto.
 *
 * The generated decoder (core/generated, from docs/bundle.cddl) checks the shape;
 * what CDDL cannot say is checked here: nothing after the message, a header label
 * at most once and never in both headers (RFC 9052 §3).
 */
#include <errno.h>
#include <string.h>

#include <psa/crypto.h>

#include "bundle_decode.h"
#include "certfleet/cose.h"

static bool label_equal(const struct Header_label_r *a, const struct Header_label_r *b)
{
	if (a->Header_label_choice != b->Header_label_choice) {
		return false;
	}
	if (a->Header_label_choice == Header_label_int_c) {
		return a->Header_label_int == b->Header_label_int;
	}
	return a->Header_label_tstr.len == b->Header_label_tstr.len &&
	       memcmp(a->Header_label_tstr.value, b->Header_label_tstr.value,
		      a->Header_label_tstr.len) == 0;
}

static bool is_int_label(const struct Header_label_r *label, int64_t value)
{
	return label->Header_label_choice == Header_label_int_c && label->Header_label_int == value;
}

/* Labels of one header beyond alg and kid: each once, and neither alg nor kid again. */
static bool labels_distinct(const struct Header_label_r *const labels[], size_t n)
{
	for (size_t i = 0; i < n; i++) {
		for (size_t j = i + 1; j < n; j++) {
			if (label_equal(labels[i], labels[j])) {
				return false;
			}
		}
	}
	return true;
}

int cf_cose_decode(const uint8_t *buf, size_t len, struct cf_cose_sign1 *msg)
{
	struct Bundle_envelope_r envelope;
	struct Protected_header protected_header = {0};
	size_t used = 0;

	memset(msg, 0, sizeof(*msg));
	if (buf == NULL || cbor_decode_Bundle_envelope(buf, len, &envelope, &used) != ZCBOR_SUCCESS ||
	    used != len) {
		return -EBADMSG;
	}
	const struct COSE_Sign1 *sign1 =
		envelope.Bundle_envelope_choice == Bundle_envelope_COSE_Sign1_Tagged_m_c
			? &envelope.Bundle_envelope_COSE_Sign1_Tagged_m
			: &envelope.Bundle_envelope_COSE_Sign1_m;

	/* A zero-length protected header stands for the empty map (RFC 9052 §3). */
	if (sign1->COSE_Sign1_protected.len > 0) {
		if (cbor_decode_Protected_header(sign1->COSE_Sign1_protected.value,
						 sign1->COSE_Sign1_protected.len, &protected_header,
						 &used) != ZCBOR_SUCCESS ||
		    used != sign1->COSE_Sign1_protected.len) {
			return -EBADMSG;
		}
	}

	/* Every label once across both headers; alg and kid are decoded on their own. */
	const struct Header_label_r *labels[3 + 2 * DEFAULT_MAX_QTY];
	size_t n = 0;
	static const struct Header_label_r alg_label = {.Header_label_int = 1,
							 .Header_label_choice = Header_label_int_c};
	static const struct Header_label_r kid_label = {.Header_label_int = 4,
							 .Header_label_choice = Header_label_int_c};
	static const struct Header_label_r dlg_label = {.Header_label_int = CF_DELEGATION_LABEL,
							 .Header_label_choice = Header_label_int_c};

	if (protected_header.Protected_header_uint1union_present) {
		labels[n++] = &alg_label;
	}
	if (protected_header.Protected_header_uint4bstr_present) {
		labels[n++] = &kid_label;
	}
	if (protected_header.Protected_header_nintbstr_present) {
		labels[n++] = &dlg_label;
	}
	for (size_t i = 0; i < protected_header.Protected_header_Header_label_count; i++) {
		labels[n++] = &protected_header.Protected_header_Header_label[i]
				       .Protected_header_Header_label_key;
	}
	for (size_t i = 0; i < sign1->COSE_Sign1_unprotected.Unprotected_header_Header_label_count;
	     i++) {
		labels[n++] = &sign1->COSE_Sign1_unprotected.Unprotected_header_Header_label[i]
				       .Unprotected_header_Header_label_key;
	}
	if (!labels_distinct(labels, n)) {
		return -EBADMSG;
	}
	/* The generated decoder takes a repeated alg or kid for an "other" label. */
	for (size_t i = 0; i < protected_header.Protected_header_Header_label_count; i++) {
		const struct Header_label_r *label =
			&protected_header.Protected_header_Header_label[i]
				 .Protected_header_Header_label_key;
		if (is_int_label(label, 1) || is_int_label(label, 4)) {
			return -EBADMSG;
		}
		/* a delegation out of its place (after alg and kid) or not a byte string */
		msg->dlg_malformed |= is_int_label(label, CF_DELEGATION_LABEL);
	}

	/* An empty protected map is signed as a zero-length string (RFC 9052 §4.4). */
	bool protected_empty = n == sign1->COSE_Sign1_unprotected.Unprotected_header_Header_label_count;
	msg->other_labels = n > (size_t)protected_header.Protected_header_uint1union_present +
				   (size_t)protected_header.Protected_header_uint4bstr_present;
	msg->protected_bytes = sign1->COSE_Sign1_protected.value;
	msg->protected_len = protected_empty ? 0 : sign1->COSE_Sign1_protected.len;
	msg->payload = sign1->COSE_Sign1_payload.value;
	msg->payload_len = sign1->COSE_Sign1_payload.len;
	msg->signature = sign1->COSE_Sign1_signature.value;
	if (protected_header.Protected_header_uint1union_present) {
		const struct Protected_header_uint1union_r *alg =
			&protected_header.Protected_header_uint1union;
		msg->alg_present = true;
		msg->alg_is_es256 = alg->Protected_header_uint1union_choice ==
					    Protected_header_uint1union_int_c &&
				    alg->Protected_header_uint1union_int == CF_COSE_ALG_ES256;
	}
	if (protected_header.Protected_header_uint4bstr_present) {
		msg->kid = protected_header.Protected_header_uint4bstr.Protected_header_uint4bstr.value;
		msg->kid_len = protected_header.Protected_header_uint4bstr.Protected_header_uint4bstr.len;
	}
	if (protected_header.Protected_header_nintbstr_present) {
		msg->dlg = protected_header.Protected_header_nintbstr.Protected_header_nintbstr.value;
		msg->dlg_len = protected_header.Protected_header_nintbstr.Protected_header_nintbstr.len;
	}
	return 0;
}

/* The head of a CBOR byte string of `len` bytes (major type 2); returns its size. */
static size_t bstr_head(uint8_t head[9], size_t len)
{
	const uint64_t value = len;

	if (value < 24) {
		head[0] = (uint8_t)(0x40 | value);
		return 1;
	}
	size_t bytes = value <= 0xff ? 1 : value <= 0xffff ? 2 : value <= 0xffffffff ? 4 : 8;
	head[0] = (uint8_t)(0x40 | (bytes == 1 ? 24 : bytes == 2 ? 25 : bytes == 4 ? 26 : 27));
	for (size_t i = 0; i < bytes; i++) {
		head[bytes - i] = (uint8_t)(value >> (8 * i));
	}
	return 1 + bytes;
}

int cf_cose_sig_structure(const struct cf_cose_sign1 *msg, const uint8_t *external_aad,
			  size_t aad_len, cf_cose_emit_t emit, void *ctx)
{
	/* array(4), text(10) "Signature1" */
	static const uint8_t context[] = {0x84, 0x6a, 'S', 'i', 'g', 'n', 'a',
					  't',	'u',  'r', 'e', '1'};
	const uint8_t *parts[3] = {msg->protected_bytes, external_aad, msg->payload};
	const size_t lens[3] = {msg->protected_len, aad_len, msg->payload_len};
	uint8_t head[9];
	int err = emit(ctx, context, sizeof(context));

	for (size_t i = 0; err == 0 && i < 3; i++) {
		err = emit(ctx, head, bstr_head(head, lens[i]));
		if (err == 0 && lens[i] > 0) {
			err = emit(ctx, parts[i], lens[i]);
		}
	}
	return err;
}

static int hash_update(void *ctx, const uint8_t *data, size_t len)
{
	return psa_hash_update(ctx, data, len) == PSA_SUCCESS ? 0 : -EIO;
}

static psa_status_t import_p256(const uint8_t *pub, size_t len, psa_key_id_t *key)
{
	psa_key_attributes_t attributes = PSA_KEY_ATTRIBUTES_INIT;

	psa_set_key_type(&attributes, PSA_KEY_TYPE_ECC_PUBLIC_KEY(PSA_ECC_FAMILY_SECP_R1));
	psa_set_key_bits(&attributes, 256);
	psa_set_key_usage_flags(&attributes, PSA_KEY_USAGE_VERIFY_HASH);
	psa_set_key_algorithm(&attributes, PSA_ALG_ECDSA(PSA_ALG_SHA_256));
	return psa_import_key(&attributes, pub, len, key);
}

bool cf_p256_point_valid(const uint8_t *pub, size_t len)
{
	psa_key_id_t key;

	if (pub == NULL || len != CF_P256_POINT_LEN || pub[0] != 0x04 ||
	    psa_crypto_init() != PSA_SUCCESS || import_p256(pub, len, &key) != PSA_SUCCESS) {
		return false;
	}
	psa_destroy_key(key);
	return true;
}

/* SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (65 bytes: 04 || x || y) } */
const uint8_t cf_p256_spki_head[CF_P256_SPKI_HEAD_LEN] = {
	0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
	0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04};

bool cf_p256_kid_matches(const uint8_t kid[CF_KID_LEN], const uint8_t pub[CF_P256_POINT_LEN])
{
	uint8_t spki[CF_P256_SPKI_HEAD_LEN - 1 + CF_P256_POINT_LEN], digest[32];
	size_t digest_len = 0;

	memcpy(spki, cf_p256_spki_head, CF_P256_SPKI_HEAD_LEN - 1);
	memcpy(spki + CF_P256_SPKI_HEAD_LEN - 1, pub, CF_P256_POINT_LEN);
	return psa_crypto_init() == PSA_SUCCESS &&
	       psa_hash_compute(PSA_ALG_SHA_256, spki, sizeof(spki), digest, sizeof(digest),
				&digest_len) == PSA_SUCCESS &&
	       memcmp(digest, kid, CF_KID_LEN) == 0;
}

int cf_cose_verify_es256(const struct cf_cose_sign1 *msg, const uint8_t *external_aad,
			 size_t aad_len, const uint8_t pub[CF_P256_POINT_LEN])
{
	psa_hash_operation_t hash = PSA_HASH_OPERATION_INIT;
	uint8_t digest[PSA_HASH_LENGTH(PSA_ALG_SHA_256)];
	size_t digest_len = 0;
	psa_key_id_t key;

	if (psa_crypto_init() != PSA_SUCCESS || psa_hash_setup(&hash, PSA_ALG_SHA_256) != PSA_SUCCESS) {
		return -EIO;
	}
	if (cf_cose_sig_structure(msg, external_aad, aad_len, hash_update, &hash) != 0 ||
	    psa_hash_finish(&hash, digest, sizeof(digest), &digest_len) != PSA_SUCCESS) {
		psa_hash_abort(&hash);
		return -EIO;
	}
	if (pub[0] != 0x04 || import_p256(pub, CF_P256_POINT_LEN, &key) != PSA_SUCCESS) {
		return -EINVAL;
	}
	psa_status_t status = psa_verify_hash(key, PSA_ALG_ECDSA(PSA_ALG_SHA_256), digest,
					      digest_len, msg->signature, CF_ES256_SIG_LEN);
	psa_destroy_key(key);
	if (status == PSA_SUCCESS) {
		return 0;
	}
	return status == PSA_ERROR_INVALID_SIGNATURE ? -EBADMSG : -EIO;
}
