/*
 * Checks 1 to 12 of docs/protocol.md §4, in their order, with 5a to 5d and 7a of a
 * delegated bundle (issue 17).
 *
 * Checks 1 to 5d decide whether the bundle is a root key's, directly or through a
 * delegation, at all; until they pass, nothing of the payload is read, so a stranger's
 * bundle cannot name a rollout.
 * Check 6 is the generated decoder (shape, types, ranges, sizes of docs/bundle.cddl)
 * followed by what CDDL cannot express, then checks 7 to 12 compare with the device.
 */
#include <errno.h>
#include <string.h>

#include "bundle_decode.h"
#include "zcbor_decode.h"
#include "certfleet/bundle.h"
#include "certfleet/cose.h"

#define CF_STR_(x) #x
#define CF_STR(x) CF_STR_(x)

bool cf_tags_contain(const uint64_t *tags, size_t n, uint64_t tag)
{
	for (size_t i = 0; i < n; i++) {
		if (tags[i] == tag) {
			return true;
		}
	}
	return false;
}

static bool tags_distinct(const struct Tag_list *list)
{
	for (size_t i = 1; i < list->Tag_list_Sec_tag_m_count; i++) {
		if (cf_tags_contain(list->Tag_list_Sec_tag_m, i, list->Tag_list_Sec_tag_m[i])) {
			return false;
		}
	}
	return true;
}

/* RFC 3629 UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. */
static bool utf8_valid(const struct zcbor_string *text)
{
	const uint8_t *s = text->value;
	size_t i = 0;

	while (i < text->len) {
		uint8_t c = s[i];
		size_t more = c < 0x80 ? 0 : (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2
			      : (c & 0xf8) == 0xf0 ? 3 : 4;
		if (more == 4 || i + more >= text->len || c == 0xc0 || c == 0xc1 ||
		    c > 0xf4) {
			return false;
		}
		for (size_t k = 1; k <= more; k++) {
			if ((s[i + k] & 0xc0) != 0x80) {
				return false;
			}
		}
		if ((c == 0xe0 && s[i + 1] < 0xa0) || (c == 0xed && s[i + 1] > 0x9f) ||
		    (c == 0xf0 && s[i + 1] < 0x90) || (c == 0xf4 && s[i + 1] > 0x8f)) {
			return false;
		}
		i += more + 1;
	}
	return true;
}

/* docs/protocol.md §1: 1 to 64 of A-Z a-z 0-9 . _ : -, starting with a letter or digit. */
static bool device_id_valid(const struct zcbor_string *id)
{
	if (id->len < 1 || id->len > CF_DEVICE_ID_MAX) {
		return false;
	}
	for (size_t i = 0; i < id->len; i++) {
		uint8_t c = id->value[i];
		bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
		if (!alnum && (i == 0 || (c != '.' && c != '_' && c != ':' && c != '-'))) {
			return false;
		}
	}
	return true;
}

static bool text_is(const struct zcbor_string *text, const char *literal)
{
	return text->len == strlen(literal) && memcmp(text->value, literal, text->len) == 0;
}

static enum cf_op parse_op(const struct zcbor_string *text)
{
	for (enum cf_op op = CF_OP_STAGE; op < CF_OP_COUNT_; op++) {
		if (text_is(text, cf_op_str(op))) {
			return op;
		}
	}
	return CF_OP_NONE;
}

/* Check 6 beyond the schema: what each op needs, and the rules CDDL cannot state. */
static const char *payload_problem(const struct Bundle_payload *p, enum cf_op op)
{
	if (op == CF_OP_NONE) {
		return CF_DETAIL("unknown operation");
	}
	if (!device_id_valid(&p->Bundle_payload_dev)) {
		return CF_DETAIL("dev is not a device id");
	}
	if (!utf8_valid(&p->Bundle_payload_rid)) {
		return CF_DETAIL("rid is not UTF-8");
	}
	if (p->Bundle_payload_seq < 1) {
		return CF_DETAIL("seq must be at least 1");
	}
	if (p->Bundle_payload_exp <= p->Bundle_payload_iat) {
		return CF_DETAIL("exp must be after iat");
	}
	if (p->Bundle_payload_undo_by_present && (p->Bundle_payload_v < 2 || op != CF_OP_COMMIT)) {
		return CF_DETAIL("undo_by belongs to a version 2 commit only");
	}
	/* a revoke's kids (other ops ignore kids and before, as §3 says of keys they do not use) */
	const struct Bundle_payload_kids_r *kids = &p->Bundle_payload_kids;
	for (size_t i = 0; op == CF_OP_REVOKE && i < kids->Bundle_payload_kids_bstr_count; i++) {
		const struct zcbor_string *kid = &kids->Bundle_payload_kids_bstr[i];
		bool repeated = false;
		for (size_t j = 0; j < i; j++) {
			repeated |= memcmp(kids->Bundle_payload_kids_bstr[j].value, kid->value, CF_KID_LEN) == 0;
		}
		if (kid->len != CF_KID_LEN || repeated) {
			return CF_DETAIL("kids are distinct 8-byte key ids");
		}
	}
	switch (op) {
	case CF_OP_REVOKE:
		if (!p->Bundle_payload_kids_present || !p->Bundle_payload_before_present) {
			return CF_DETAIL("revoke needs kids and before");
		}
		break;
	case CF_OP_STAGE:
		if (!p->Bundle_payload_tag_present || !p->Bundle_payload_creds_present ||
		    !p->Bundle_payload_probe_present || !p->Bundle_payload_active_present ||
		    !p->Bundle_payload_commit_by_present) {
			return CF_DETAIL("stage needs tag, creds, probe, active and commit_by");
		}
		break;
	case CF_OP_COMMIT:
		if (!p->Bundle_payload_tag_present) {
			return CF_DETAIL("commit needs tag");
		}
		break;
	case CF_OP_RETIRE:
		if (!p->Bundle_payload_tags_present || !p->Bundle_payload_active_present) {
			return CF_DETAIL("retire needs tags and active");
		}
		break;
	case CF_OP_TRUST_SIGNER:
		if (!p->Bundle_payload_signer_present) {
			return CF_DETAIL("trust-signer needs signer");
		}
		break;
	case CF_OP_KEYGEN:
		if (!p->Bundle_payload_tag_present || !p->Bundle_payload_subject_present ||
		    !p->Bundle_payload_commit_by_present) {
			return CF_DETAIL("keygen needs tag, subject and commit_by");
		}
		break;
	default:
		break;
	}
	if ((p->Bundle_payload_tags_present && !tags_distinct(&p->Bundle_payload_tags.Bundle_payload_tags)) ||
	    (p->Bundle_payload_active_present &&
	     !tags_distinct(&p->Bundle_payload_active.Bundle_payload_active)) ||
	    (p->Bundle_payload_probe_present &&
	     !tags_distinct(&p->Bundle_payload_probe.Bundle_payload_probe.Probe_tags))) {
		return CF_DETAIL("a sec_tag list names a tag twice");
	}
	if (p->Bundle_payload_probe_present &&
	    !utf8_valid(&p->Bundle_payload_probe.Bundle_payload_probe.Probe_host)) {
		return CF_DETAIL("probe.host is not UTF-8");
	}
	const struct zcbor_string *subject = &p->Bundle_payload_subject.Bundle_payload_subject;
	for (size_t i = 0; p->Bundle_payload_subject_present && i < subject->len; i++) {
		if (subject->value[i] < 0x20 || subject->value[i] == 0x7f) {
			return CF_DETAIL("subject holds a control character");
		}
	}
	if (p->Bundle_payload_subject_present && !utf8_valid(subject)) {
		return CF_DETAIL("subject is not UTF-8");
	}
	const struct Bundle_payload_creds_r *creds = &p->Bundle_payload_creds;
	for (size_t i = 0; p->Bundle_payload_creds_present && i < creds->Bundle_payload_creds_Credential_m_count; i++) {
		const struct Credential *cred = &creds->Bundle_payload_creds_Credential_m[i];
		if (!utf8_valid(&cred->Credential_pem)) {
			return CF_DETAIL("a credential is not UTF-8 text");
		}
		const bool pem_item = cred->Credential_type == CF_CRED_TYPE_CA_CHAIN ||
				      cred->Credential_type == CF_CRED_TYPE_CLIENT_CERT;
		for (size_t k = 0; pem_item && k < cred->Credential_pem.len; k++) {
			uint8_t c = cred->Credential_pem.value[k];
			if (c == 0 || c > 0x7f) {
				return CF_DETAIL("a CA chain or certificate is ASCII PEM text without NUL");
			}
		}
		if (cred->Credential_type == CF_CRED_TYPE_CLIENT_CERT &&
		    creds->Bundle_payload_creds_Credential_m_count != 1) {
			return CF_DETAIL("a client certificate travels alone (an identity stage)");
		}
		if (cred->Credential_type == CF_CRED_TYPE_CLIENT_CERT && p->Bundle_payload_probe_present &&
		    p->Bundle_payload_probe.Bundle_payload_probe.Probe_tags.Tag_list_Sec_tag_m_count >
			    CF_TAG_LIST_MAX - 1) {
			return CF_DETAIL("an identity stage's probe names at most 6 tags (with the staged one, 7)");
		}
		for (size_t j = 0; j < i; j++) {
			if (creds->Bundle_payload_creds_Credential_m[j].Credential_type ==
			    cred->Credential_type) {
				return CF_DETAIL("two credentials of one type (one item per sec_tag and type)");
			}
		}
	}
	return NULL;
}

/*
 * The version of a payload the schema refused, read from its first key ("v" sorts
 * first): a newer version's payload may carry keys this device does not know, and
 * is then `unsupported_version`, not `bad_payload`.
 */
static bool peek_version(const uint8_t *payload, size_t len, uint64_t *version)
{
	ZCBOR_STATE_D(state, 1, payload, len, 1, 0);

	return zcbor_map_start_decode(state) && zcbor_tstr_expect_lit(state, "v") &&
	       zcbor_uint64_decode(state, version);
}

/*
 * rid, seq and op of a signed payload the schema refused, read best effort so the
 * rejection still names the bundle: a map whose "rid" is UTF-8 text of at most 128
 * bytes (or absent) and whose "seq" is an unsigned integer (or absent); "op" only if it
 * is text of at most 32 bytes. Anything else names nothing (seq 0, rid "", no op).
 */
static void read_ids(const uint8_t *payload, size_t len, struct cf_bundle *out)
{
	ZCBOR_STATE_D(state, 2, payload, len, 1, 0);
	struct zcbor_string rid = {(const uint8_t *)"", 0}, op = {NULL, 0}, key;
	uint64_t seq = 0;

	if (!zcbor_map_start_decode(state)) {
		return;
	}
	for (int pairs = 0; pairs < 64 && !zcbor_array_at_end(state); pairs++) {
		if (!zcbor_tstr_decode(state, &key)) {
			if (!zcbor_any_skip(state, NULL) || !zcbor_any_skip(state, NULL)) {
				return;
			}
			continue;
		}
		bool ok = true;
		if (key.len == 3 && memcmp(key.value, "rid", 3) == 0) {
			ok = zcbor_tstr_decode(state, &rid) && rid.len <= CF_REPORT_RID_MAX_BYTES &&
			     utf8_valid(&rid);
		} else if (key.len == 3 && memcmp(key.value, "seq", 3) == 0) {
			ok = zcbor_uint64_decode(state, &seq);
		} else if (key.len == 2 && memcmp(key.value, "op", 2) == 0) {
			struct zcbor_string text;
			if (zcbor_tstr_decode(state, &text)) {
				op = text.len <= CF_REPORT_OP_MAX_BYTES && utf8_valid(&text) ? text : op;
			} else {
				ok = zcbor_any_skip(state, NULL);
			}
		} else {
			ok = zcbor_any_skip(state, NULL);
		}
		if (!ok) {
			return; /* a rid or seq of the wrong kind: the payload names nothing */
		}
	}
	out->ids_known = true;
	out->p.Bundle_payload_rid = rid;
	out->p.Bundle_payload_seq = seq;
	out->p.Bundle_payload_op = op;
}

/* What a delegation lets its key sign (check 7a), kept once its payload is checked. */
struct scope {
	uint8_t ops;   /* bit (1 << enum cf_op) for each op it names */
	uint8_t kinds; /* bit (1 << type) for each credential type */
	size_t n_rids; /* 0: any rollout */
	struct zcbor_string rids[CF_DELEGATION_RIDS_MAX];
};

/* A delegation's payload (docs/bundle.cddl, Delegation_payload). */
struct delegation {
	uint64_t times[3]; /* exp, iat, nbf */
	struct zcbor_string kid, pub;
};
enum { DLG_EXP, DLG_IAT, DLG_NBF };

static const struct cf_signer *trusted(const struct cf_bundle_env *env, const uint8_t *kid,
				       size_t kid_len)
{
	for (size_t i = 0; kid_len == CF_KID_LEN && i < env->n_signers; i++) {
		if (memcmp(env->signers[i].kid, kid, CF_KID_LEN) == 0) {
			return &env->signers[i];
		}
	}
	return NULL;
}

/* One entry of a delegation's ops, kinds or rids; false: `bad_delegation`. */
static bool scope_entry(zcbor_state_t *state, size_t key, struct scope *scope)
{
	struct zcbor_string text;
	uint64_t kind;

	if (key == 8) { /* kinds: distinct credential types */
		if (!zcbor_uint64_decode(state, &kind) || kind > CF_CRED_TYPE_MAX ||
		    (scope->kinds & (1u << kind)) != 0) {
			return false;
		}
		scope->kinds |= (uint8_t)(1u << kind);
		return true;
	}
	if (!zcbor_tstr_decode(state, &text)) {
		return false;
	}
	if (key == 5) { /* ops: distinct delegable ops, never trust-signer or revoke */
		enum cf_op op = parse_op(&text);
		if (op == CF_OP_NONE || op == CF_OP_TRUST_SIGNER || op == CF_OP_REVOKE ||
		    (scope->ops & (1u << op)) != 0) {
			return false;
		}
		scope->ops |= (uint8_t)(1u << op);
		return true;
	}
	/* rids: 1 to 4 distinct UTF-8 texts of at most 64 bytes */
	for (size_t i = 0; i < scope->n_rids; i++) {
		if (scope->rids[i].len == text.len && memcmp(scope->rids[i].value, text.value, text.len) == 0) {
			return false;
		}
	}
	if (scope->n_rids == CF_DELEGATION_RIDS_MAX || text.len > CF_RID_MAX_BYTES || !utf8_valid(&text)) {
		return false;
	}
	scope->rids[scope->n_rids++] = text;
	return true;
}

/*
 * Check 5a's decoding of a delegation payload (docs/bundle.cddl, Delegation_payload), by
 * hand: a map whose keys come in its deterministic order, each at most once, none other,
 * all but "rids" present; v 1; kid 8 bytes, pub 65; ops, rids and kinds as scope_entry
 * takes them, none empty. The point and its key id are checked by the caller.
 */
static bool decode_delegation(const uint8_t *payload, size_t len, struct delegation *d,
			      struct scope *scope)
{
	static const char keys[][6] = {"v", "exp", "iat", "kid", "nbf", "ops", "pub", "rids", "kinds"};
	ZCBOR_STATE_D(state, 2, payload, len, 1, 0);
	struct zcbor_string name;
	unsigned seen = 0;
	size_t next = 0;
	uint64_t value;

	if (!zcbor_map_start_decode(state)) {
		return false;
	}
	while (!zcbor_array_at_end(state)) {
		size_t key = next;
		if (!zcbor_tstr_decode(state, &name)) {
			return false;
		}
		while (key < sizeof(keys) / sizeof(keys[0]) &&
		       (strlen(keys[key]) != name.len || memcmp(keys[key], name.value, name.len) != 0)) {
			key++;
		}
		bool ok = key < sizeof(keys) / sizeof(keys[0]);
		if (ok && (key == 3 || key == 6)) { /* kid, pub */
			struct zcbor_string *bytes = key == 3 ? &d->kid : &d->pub;
			ok = zcbor_bstr_decode(state, bytes) &&
			     bytes->len == (key == 3 ? CF_KID_LEN : CF_P256_POINT_LEN);
		} else if (ok && key >= 5) { /* ops, rids, kinds: not empty */
			ok = zcbor_list_start_decode(state) && !zcbor_array_at_end(state);
			while (ok && !zcbor_array_at_end(state)) {
				ok = scope_entry(state, key, scope);
			}
			ok = ok && zcbor_list_end_decode(state);
		} else if (ok) { /* v, exp, iat, nbf */
			ok = zcbor_uint64_decode(state, &value) && (key != 0 || value == CF_DELEGATION_VERSION);
			if (key > 0) {
				d->times[key == 1 ? DLG_EXP : key == 2 ? DLG_IAT : DLG_NBF] = value;
			}
		}
		if (!ok) {
			return false;
		}
		seen |= 1u << key;
		next = key + 1;
	}
	/* every key but rids (7) */
	return (seen | 1u << 7) == (1u << 9) - 1 && zcbor_map_end_decode(state) &&
	       state->payload == payload + len;
}

/*
 * Checks 4 to 5c of a delegated bundle (protected header label -65537): the delegation
 * is a COSE_Sign1 by a trusted root key (4, 5), well formed and for the bundle's key
 * (5a), not revoked (5b), valid now (5c). On CF_REASON_OK, `*pub` is the delegated key
 * (in the received buffer) that must verify the bundle (5d), `scope` what it may sign.
 */
static enum cf_reason open_delegation(const struct cf_cose_sign1 *msg,
				      const struct cf_bundle_env *env, const uint8_t **pub,
				      struct scope *scope, const char **detail)
{
	struct cf_cose_sign1 dlg;
	struct delegation d;

	/* 4: tagged 18, its headers alg and kid only (the unprotected one empty) */
	if (msg->dlg_malformed || msg->dlg_len > CF_DELEGATION_MAX_BYTES || msg->dlg_len < 1 ||
	    msg->dlg[0] != 0xd2 || cf_cose_decode(msg->dlg, msg->dlg_len, &dlg) != 0 ||
	    dlg.other_labels) {
		*detail = CF_DETAIL("the delegation is not a COSE_Sign1 of at most 640 bytes");
		return CF_REASON_BAD_DELEGATION;
	}
	if (!dlg.alg_is_es256) {
		*detail = CF_DETAIL("the delegation must carry alg ES256 (-7)");
		return CF_REASON_UNSUPPORTED_ALGORITHM;
	}
	const struct cf_signer *root = trusted(env, dlg.kid, dlg.kid_len);
	if (root == NULL) {
		*detail = CF_DETAIL("the delegation's kid is not a trusted root key");
		return CF_REASON_UNKNOWN_KEY;
	}
	/* 5 */
	if (cf_cose_verify_es256(&dlg, NULL, 0, root->pub) != 0) {
		*detail = CF_DETAIL("the delegation's signature does not verify");
		return CF_REASON_BAD_SIGNATURE;
	}
	/* 5a */
	if (!decode_delegation(dlg.payload, dlg.payload_len, &d, scope) ||
	    d.times[DLG_NBF] >= d.times[DLG_EXP] ||
	    !cf_p256_point_valid(d.pub.value, d.pub.len) ||
	    !cf_p256_kid_matches(d.kid.value, d.pub.value) || msg->kid_len != CF_KID_LEN ||
	    memcmp(msg->kid, d.kid.value, CF_KID_LEN) != 0) {
		*detail = CF_DETAIL("the delegation is malformed or not the bundle key's");
		return CF_REASON_BAD_DELEGATION;
	}
	/* 5b */
	bool revoked = d.times[DLG_IAT] < env->revoked_before;
	for (size_t i = 0; i < env->n_revoked; i++) {
		revoked |= memcmp(env->revoked[i], d.kid.value, CF_KID_LEN) == 0;
	}
	if (revoked) {
		*detail = CF_DETAIL("the delegation is revoked");
		return CF_REASON_DELEGATION_REVOKED;
	}
	/* 5c */
	if (env->now >= d.times[DLG_EXP] || d.times[DLG_NBF] > env->now + CF_CLOCK_SKEW_SECONDS) {
		*detail = CF_DETAIL("the delegation is not valid now");
		return CF_REASON_DELEGATION_EXPIRED;
	}
	*pub = d.pub.value;
	return CF_REASON_OK;
}

/* Check 7a: a delegated bundle's op, credential types and rid are within its scope. */
static bool in_scope(const struct Bundle_payload *p, enum cf_op op, const struct scope *scope)
{
	/* trust-signer and revoke are never delegable: their bits are never set */
	if ((scope->ops & (1u << op)) == 0) {
		return false;
	}
	const struct Bundle_payload_creds_r *creds = &p->Bundle_payload_creds;
	for (size_t i = 0; p->Bundle_payload_creds_present && i < creds->Bundle_payload_creds_Credential_m_count; i++) {
		if ((scope->kinds & (1u << creds->Bundle_payload_creds_Credential_m[i].Credential_type)) == 0) {
			return false;
		}
	}
	bool rid_named = scope->n_rids == 0;
	for (size_t i = 0; i < scope->n_rids; i++) {
		rid_named |= scope->rids[i].len == p->Bundle_payload_rid.len &&
			     memcmp(scope->rids[i].value, p->Bundle_payload_rid.value, scope->rids[i].len) == 0;
	}
	return rid_named;
}

enum cf_reason cf_bundle_open(const uint8_t *buf, size_t len, const struct cf_bundle_env *env,
			      struct cf_bundle *out)
{
	struct cf_cose_sign1 msg;
	size_t used = 0;

	memset(out, 0, sizeof(*out));
	out->detail = "";
	/* 1 */
	if (len > CF_BUNDLE_MAX_BYTES) {
		out->detail = CF_DETAIL("bundle over " CF_STR(CF_BUNDLE_MAX_BYTES) " bytes");
		return CF_REASON_TOO_LARGE;
	}
	/* 2 */
	if (cf_cose_decode(buf, len, &msg) != 0) {
		out->detail = CF_DETAIL("not a well-formed COSE_Sign1");
		return CF_REASON_BAD_ENVELOPE;
	}
	/* 3 */
	if (!msg.alg_is_es256) {
		out->detail = CF_DETAIL("the protected header must carry alg ES256 (-7)");
		return CF_REASON_UNSUPPORTED_ALGORITHM;
	}
	/* 4 and 5: a root key's bundle, or 4 to 5c of its delegation and 5d */
	struct scope scope = {0};
	const uint8_t *pub = NULL;
	out->delegated = msg.dlg != NULL || msg.dlg_malformed;
	if (out->delegated) {
		enum cf_reason reason = open_delegation(&msg, env, &pub, &scope, &out->detail);
		if (reason != CF_REASON_OK) {
			return reason;
		}
	} else {
		const struct cf_signer *signer = trusted(env, msg.kid, msg.kid_len);
		if (signer == NULL) {
			out->detail = CF_DETAIL("the protected header's kid is not a trusted signer");
			return CF_REASON_UNKNOWN_KEY;
		}
		pub = signer->pub;
	}
	if (cf_cose_verify_es256(&msg, NULL, 0, pub) != 0) {
		out->detail = CF_DETAIL("the signature does not verify");
		return CF_REASON_BAD_SIGNATURE;
	}
	out->verified = true;
	/* 6, with 7 for a payload of a version whose keys this device does not know */
	struct Bundle_payload *p = &out->p;
	if (cbor_decode_Bundle_payload(msg.payload, msg.payload_len, p, &used) != ZCBOR_SUCCESS ||
	    used != msg.payload_len) {
		uint64_t version = 0;
		memset(p, 0, sizeof(*p));
		read_ids(msg.payload, msg.payload_len, out);
		if (peek_version(msg.payload, msg.payload_len, &version) &&
		    (version < CF_VERSION_MIN || version > CF_VERSION_MAX)) {
			out->detail = CF_DETAIL("payload version not supported");
			return CF_REASON_UNSUPPORTED_VERSION;
		}
		out->detail = CF_DETAIL("the payload does not match docs/bundle.cddl");
		return CF_REASON_BAD_PAYLOAD;
	}
	out->op = (uint8_t)parse_op(&p->Bundle_payload_op);
	out->ids_known = utf8_valid(&p->Bundle_payload_rid);
	if (p->Bundle_payload_op.len > CF_REPORT_OP_MAX_BYTES || !utf8_valid(&p->Bundle_payload_op)) {
		p->Bundle_payload_op = (struct zcbor_string){NULL, 0}; /* names no op */
	}
	/* 7 before the payload's own rules, as the orchestrator's decoder orders them */
	if (p->Bundle_payload_v < CF_VERSION_MIN || p->Bundle_payload_v > CF_VERSION_MAX) {
		out->detail = CF_DETAIL("payload version not supported");
		return CF_REASON_UNSUPPORTED_VERSION;
	}
	const char *problem = payload_problem(p, out->op);
	if (problem != NULL) {
		out->detail = problem;
		return CF_REASON_BAD_PAYLOAD;
	}
	/* 7a */
	if (out->delegated && !in_scope(p, (enum cf_op)out->op, &scope)) {
		out->detail = out->op == CF_OP_TRUST_SIGNER || out->op == CF_OP_REVOKE
				      ? CF_DETAIL("a root op must be signed by a root key itself")
				      : CF_DETAIL("the op, a credential type or the rid is not delegated");
		return CF_REASON_OUT_OF_SCOPE;
	}
	/* 8 */
	if (!text_is(&p->Bundle_payload_dev, env->device_id)) {
		out->detail = CF_DETAIL("the bundle is for another device");
		return CF_REASON_WRONG_DEVICE;
	}
	/* 9 */
	if (p->Bundle_payload_seq <= env->last_seq) {
		out->detail = CF_DETAIL("seq is not above the last accepted");
		return CF_REASON_REPLAY;
	}
	/* 10 */
	if (env->now >= p->Bundle_payload_exp) {
		out->detail = CF_DETAIL("the bundle expired");
		return CF_REASON_BUNDLE_EXPIRED;
	}
	/* 11 */
	if (p->Bundle_payload_iat > env->now + CF_CLOCK_SKEW_SECONDS) {
		out->detail = CF_DETAIL("issued more than 300 s ahead of the device clock");
		return CF_REASON_NOT_YET_VALID;
	}
	/* 12 */
	const struct Bundle_payload_creds_r *creds = &p->Bundle_payload_creds;
	for (size_t i = 0; p->Bundle_payload_creds_present && i < creds->Bundle_payload_creds_Credential_m_count; i++) {
		const struct Credential *cred = &creds->Bundle_payload_creds_Credential_m[i];
		if (cred->Credential_type == CF_CRED_TYPE_CA_CHAIN &&
		    cred->Credential_pem.len > CF_CA_CHAIN_MAX_BYTES) {
			out->detail = CF_DETAIL("a CA chain item is over 4096 bytes");
			return CF_REASON_TOO_LARGE;
		}
		if (cred->Credential_type == CF_CRED_TYPE_CLIENT_CERT &&
		    cred->Credential_pem.len > CF_CERT_ITEM_MAX_BYTES) {
			out->detail = CF_DETAIL("a client certificate item is over 4096 bytes");
			return CF_REASON_TOO_LARGE;
		}
	}
	return CF_REASON_OK;
}
