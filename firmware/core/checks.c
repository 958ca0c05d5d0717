/*
 * Check 13 of docs/protocol.md §4: does the operation make sense on this device now.
 *
 * Every refusal here comes before `received`: nothing is written and the seq is not
 * consumed. The undo rules are contract v2's: one record at most; a rollback undoes
 * that record only, and only for its own rollout (an empty rid, a manual send, undoes
 * only a manual change); nothing may leave the active list empty, over seven tags, or
 * naming a tag without a CA chain item. The identity (issue 14): the tag in use is never
 * written, deleted or retired; a certificate is staged only into the tag whose key this
 * device's keygen made for the same rollout, and only when it certifies that key.
 */
#include <string.h>

#include <psa/crypto.h>

#include "certfleet/cose.h"
#include "checks.h"

static bool holds_ca(struct cf_device *dev, uint32_t tag)
{
	bool exists = false;

	return dev->ports.keystore.exists(dev->ports.keystore.ctx, tag, CF_CRED_TYPE_CA_CHAIN,
					  &exists) == 0 &&
	       exists;
}

static bool holds(struct cf_device *dev, uint32_t tag, uint8_t type)
{
	bool exists = false;

	return dev->ports.keystore.exists(dev->ports.keystore.ctx, tag, type, &exists) == 0 &&
	       exists;
}

static bool identity_is(const struct cf_state *st, uint64_t tag)
{
	return st->has_identity && st->identity_tag == tag;
}

/*
 * Whether a PEM certificate certifies the key in (tag, 2): its first P-256
 * SubjectPublicKeyInfo (the subject's key: in a certificate it comes before anything
 * else that could hold one) hashes to the key store's digest of the made key. The
 * base64 is decoded as a stream through a window of the SPKI's 91 bytes, no DER buffer.
 */
#define SPKI_LEN 91

static int b64_value(uint8_t c)
{
	return c >= 'A' && c <= 'Z'   ? c - 'A'
	       : c >= 'a' && c <= 'z' ? c - 'a' + 26
	       : c >= '0' && c <= '9' ? c - '0' + 52
	       : c == '+'	      ? 62
	       : c == '/'	      ? 63
				      : -1;
}

static bool certifies_key(struct cf_device *dev, const struct zcbor_string *pem, uint32_t tag)
{
	uint8_t window[SPKI_LEN], digest[32], made[32];
	size_t filled = 0, i = 0, hash_len = 0;
	uint32_t acc = 0;
	int bits = 0;

	if (dev->ports.keystore.digest(dev->ports.keystore.ctx, tag, CF_CRED_TYPE_CLIENT_KEY,
				       made) != 0) {
		return false;
	}
	while (i < pem->len && pem->value[i] != '\n') { /* past the BEGIN line */
		i++;
	}
	for (; i < pem->len && pem->value[i] != '-' && pem->value[i] != '='; i++) {
		int v = b64_value(pem->value[i]);
		if (v < 0) {
			continue; /* line breaks */
		}
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits < 8) {
			continue;
		}
		bits -= 8;
		if (filled == SPKI_LEN) {
			memmove(window, window + 1, SPKI_LEN - 1);
			filled--;
		}
		window[filled++] = (uint8_t)(acc >> bits);
		if (filled == SPKI_LEN && memcmp(window, cf_p256_spki_head, CF_P256_SPKI_HEAD_LEN) == 0) {
			return psa_hash_compute(PSA_ALG_SHA_256, window, SPKI_LEN, digest,
						sizeof(digest), &hash_len) == PSA_SUCCESS &&
			       memcmp(digest, made, sizeof(digest)) == 0;
		}
	}
	return false;
}

/* An identity stage: the keygen record of its rollout and tag, a certificate of that key. */
static enum cf_reason check_identity_stage(struct cf_device *dev, const struct cf_bundle *b,
					   const char **detail)
{
	const struct cf_state *st = &dev->state;
	const struct zcbor_string *rid = &b->p.Bundle_payload_rid;
	const uint64_t tag = b->p.Bundle_payload_tag.Bundle_payload_tag;

	if (st->stage_phase != CF_STAGE_KEYGEN || !st->stage_identity || st->stage_tag != tag ||
	    st->undo_kind != CF_UNDO_STAGE || rid->len != st->undo_rid_len ||
	    memcmp(rid->value, st->undo_rid, rid->len) != 0) {
		*detail = CF_DETAIL("no key made by a keygen of this rollout in this sec_tag");
		return CF_REASON_NOTHING_STAGED;
	}
	const struct Credential *cert = &b->p.Bundle_payload_creds.Bundle_payload_creds_Credential_m[0];
	if (!certifies_key(dev, &cert->Credential_pem, (uint32_t)tag)) {
		*detail = CF_DETAIL("the certificate's public key is not the key the keygen made");
		return CF_REASON_KEY_MISMATCH;
	}
	if (b->p.Bundle_payload_active.Bundle_payload_active.Tag_list_Sec_tag_m_count >
	    CF_TAG_LIST_MAX - 1) {
		*detail = CF_DETAIL("with an identity the active list names at most 6 tags");
		return CF_REASON_UNSAFE_ACTIVE;
	}
	return CF_REASON_OK;
}

/* The most active tags the device may name: a socket takes 7 sec_tags, the identity one. */
static size_t list_max(const struct cf_state *st)
{
	return st->has_identity ? CF_TAG_LIST_MAX - 1 : CF_TAG_LIST_MAX;
}

static bool list_safe(struct cf_device *dev, const uint32_t *tags, size_t n)
{
	if (n < 1 || n > list_max(&dev->state)) {
		return false;
	}
	for (size_t i = 0; i < n; i++) {
		if (!holds_ca(dev, tags[i])) {
			return false;
		}
	}
	return true;
}

static bool active_contains(const struct cf_state *st, uint64_t tag)
{
	for (size_t i = 0; i < st->n_active; i++) {
		if (st->active[i] == tag) {
			return true;
		}
	}
	return false;
}

bool cf_undo_live(const struct cf_state *st, uint64_t now)
{
	return st->undo_kind != CF_UNDO_NONE && (st->undo_by == 0 || now < st->undo_by);
}

size_t cf_commit_list(const struct cf_state *st, const struct cf_bundle *b, uint32_t *out)
{
	if (b->p.Bundle_payload_active_present) {
		const struct Tag_list *list = &b->p.Bundle_payload_active.Bundle_payload_active;
		for (size_t i = 0; i < list->Tag_list_Sec_tag_m_count; i++) {
			out[i] = (uint32_t)list->Tag_list_Sec_tag_m[i];
		}
		return list->Tag_list_Sec_tag_m_count;
	}
	memcpy(out, st->stage_active, st->n_stage_active * sizeof(out[0]));
	return st->n_stage_active;
}

/*
 * The list a stage names for after its commit: each tag either receives the stage's
 * CA chain or holds one now that neither this stage nor the open stage it replaces
 * deletes.
 */
static enum cf_reason check_stage_list(struct cf_device *dev, const struct cf_bundle *b,
				       const char **detail)
{
	const struct cf_state *st = &dev->state;
	const uint64_t tag = b->p.Bundle_payload_tag.Bundle_payload_tag;
	const struct Tag_list *after = &b->p.Bundle_payload_active.Bundle_payload_active;
	const struct Bundle_payload_creds_r *creds = &b->p.Bundle_payload_creds;
	bool brings_ca = false;

	if (after->Tag_list_Sec_tag_m_count > list_max(st)) {
		*detail = CF_DETAIL("with an identity the active list names at most 6 tags");
		return CF_REASON_UNSAFE_ACTIVE;
	}
	for (size_t i = 0; i < creds->Bundle_payload_creds_Credential_m_count; i++) {
		brings_ca |= creds->Bundle_payload_creds_Credential_m[i].Credential_type ==
			     CF_CRED_TYPE_CA_CHAIN;
	}
	for (size_t i = 0; i < after->Tag_list_Sec_tag_m_count; i++) {
		const uint64_t t = after->Tag_list_Sec_tag_m[i];
		bool wiped = t == tag || (st->stage_phase != CF_STAGE_NONE && st->stage_tag == t);
		if ((t == tag && brings_ca) || (!wiped && holds_ca(dev, (uint32_t)t))) {
			continue;
		}
		*detail = CF_DETAIL("the stage's active list would name a tag without a CA chain");
		return CF_REASON_UNSAFE_ACTIVE;
	}
	return CF_REASON_OK;
}

static enum cf_reason check_rollback(struct cf_device *dev, const struct cf_bundle *b,
				     uint64_t now, const char **detail)
{
	const struct cf_state *st = &dev->state;
	const struct zcbor_string *rid = &b->p.Bundle_payload_rid;

	if (!cf_undo_live(st, now)) {
		*detail = CF_DETAIL("no undo record: nothing to undo");
		return CF_REASON_NOTHING_TO_UNDO;
	}
	if (rid->len != st->undo_rid_len || memcmp(rid->value, st->undo_rid, rid->len) != 0) {
		*detail = CF_DETAIL("the latest change belongs to another rollout");
		return CF_REASON_SUPERSEDED;
	}
	if (st->undo_kind == CF_UNDO_COMMIT &&
	    !list_safe(dev, st->undo_previous, st->n_undo_previous)) {
		*detail = CF_DETAIL("the previous active list names a tag without a CA chain");
		return CF_REASON_UNSAFE_ACTIVE;
	}
	if (st->undo_kind == CF_UNDO_COMMIT && st->undo_identity && st->undo_had_identity &&
	    (!holds(dev, st->undo_prev_identity, CF_CRED_TYPE_CLIENT_CERT) ||
	     !holds(dev, st->undo_prev_identity, CF_CRED_TYPE_CLIENT_KEY))) {
		*detail = CF_DETAIL("the previous identity's certificate or key is gone");
		return CF_REASON_UNSAFE_ACTIVE;
	}
	return CF_REASON_OK;
}

static enum cf_reason check_trust_signer(const struct cf_state *st, const struct cf_bundle *b,
					 const char **detail)
{
	const struct Signer *signer = &b->p.Bundle_payload_signer.Bundle_payload_signer;
	const struct zcbor_string *retire = &b->p.Bundle_payload_retire_kid.Bundle_payload_retire_kid;
	size_t remaining = 0;
	bool added = false;

	if (signer->Signer_kid.len != CF_KID_LEN ||
	    !cf_p256_point_valid(signer->Signer_pub.value, signer->Signer_pub.len)) {
		*detail = CF_DETAIL("signer needs an 8-byte kid and an uncompressed P-256 point");
		return CF_REASON_BAD_PAYLOAD;
	}
	for (size_t i = 0; i < st->n_signers; i++) {
		const uint8_t *kid = st->signers[i].kid;
		bool retired = b->p.Bundle_payload_retire_kid_present && retire->len == CF_KID_LEN &&
			       memcmp(retire->value, kid, CF_KID_LEN) == 0;
		added |= memcmp(signer->Signer_kid.value, kid, CF_KID_LEN) == 0;
		remaining += retired ? 0 : 1;
	}
	bool new_retired = b->p.Bundle_payload_retire_kid_present && retire->len == CF_KID_LEN &&
			   memcmp(retire->value, signer->Signer_kid.value, CF_KID_LEN) == 0;
	remaining += (added || new_retired) ? 0 : 1;
	if (remaining < 1) {
		*detail = CF_DETAIL("the device would trust no signer");
		return CF_REASON_INVALID_OPERATION;
	}
	if (remaining > CF_SIGNERS_MAX) {
		*detail = CF_DETAIL("the device would trust more than 4 signers");
		return CF_REASON_INVALID_OPERATION;
	}
	return CF_REASON_OK;
}

enum cf_reason cf_check_operation(struct cf_device *dev, const struct cf_bundle *b, uint64_t now,
				  const char **detail)
{
	const struct cf_state *st = &dev->state;
	uint32_t list[CF_TAG_LIST_MAX];
	const uint64_t tag = b->p.Bundle_payload_tag.Bundle_payload_tag;

	switch (b->op) {
	case CF_OP_STAGE:
		if (active_contains(st, tag) || identity_is(st, tag)) {
			*detail = CF_DETAIL("the sec_tag is in use; a stage never overwrites it");
			return CF_REASON_TAG_IN_USE;
		}
		if (b->p.Bundle_payload_creds.Bundle_payload_creds_Credential_m[0].Credential_type ==
		    CF_CRED_TYPE_CLIENT_CERT) {
			enum cf_reason reason = check_identity_stage(dev, b, detail);
			if (reason != CF_REASON_OK) {
				return reason;
			}
		}
		return check_stage_list(dev, b, detail);
	case CF_OP_KEYGEN:
		if (active_contains(st, tag) || identity_is(st, tag)) {
			*detail = CF_DETAIL("the sec_tag is in use; a keygen never overwrites it");
			return CF_REASON_TAG_IN_USE;
		}
		return CF_REASON_OK;
	case CF_OP_COMMIT:
		if (st->stage_phase != CF_STAGE_HEALTHY || st->stage_tag != tag) {
			*detail = CF_DETAIL("no healthy stage of this sec_tag to commit");
			return CF_REASON_NOTHING_STAGED;
		}
		if (st->stage_identity && st->n_active > CF_TAG_LIST_MAX - 1) {
			*detail = CF_DETAIL("with an identity the active list names at most 6 tags");
			return CF_REASON_UNSAFE_ACTIVE;
		}
		if (!st->stage_identity && !list_safe(dev, list, cf_commit_list(st, b, list))) {
			*detail = CF_DETAIL("the new active list names a tag without a CA chain");
			return CF_REASON_UNSAFE_ACTIVE;
		}
		return CF_REASON_OK;
	case CF_OP_ROLLBACK:
		return check_rollback(dev, b, now, detail);
	case CF_OP_RETIRE: {
		const struct Tag_list *tags = &b->p.Bundle_payload_tags.Bundle_payload_tags;
		const struct Tag_list *active = &b->p.Bundle_payload_active.Bundle_payload_active;
		if (st->has_identity &&
		    cf_tags_contain(tags->Tag_list_Sec_tag_m, tags->Tag_list_Sec_tag_m_count,
				    st->identity_tag)) {
			*detail = CF_DETAIL("the identity in use is never retired");
			return CF_REASON_TAG_IN_USE;
		}
		if (active->Tag_list_Sec_tag_m_count > list_max(st)) {
			*detail = CF_DETAIL("with an identity the active list names at most 6 tags");
			return CF_REASON_UNSAFE_ACTIVE;
		}
		/* a retire drops the undo record: an open stage's tag is deleted with it */
		for (size_t i = 0; i < active->Tag_list_Sec_tag_m_count; i++) {
			const uint64_t t = active->Tag_list_Sec_tag_m[i];
			if (cf_tags_contain(tags->Tag_list_Sec_tag_m, tags->Tag_list_Sec_tag_m_count, t) ||
			    (st->stage_phase != CF_STAGE_NONE && st->stage_tag == t) ||
			    !holds_ca(dev, (uint32_t)t)) {
				*detail = CF_DETAIL("the new active list would name a tag without a CA chain");
				return CF_REASON_UNSAFE_ACTIVE;
			}
		}
		return CF_REASON_OK;
	}
	case CF_OP_TRUST_SIGNER:
		return check_trust_signer(st, b, detail);
	case CF_OP_REVOKE:
		return CF_REASON_OK; /* its kids were checked with the payload (check 6) */
	default:
		*detail = CF_DETAIL("unknown operation");
		return CF_REASON_BAD_PAYLOAD;
	}
}
