/*
 * The operations of docs/protocol.md §5 once a bundle passed every check, and the
 * reports they publish. Each persists its intent before it touches the key store
 * (see device.c for the order and what a reboot does with it).
 */
#include <errno.h>
#include <string.h>

#include "checks.h"
#include "ops.h"

static uint64_t now(struct cf_device *dev)
{
	return dev->ports.clock.now(dev->ports.clock.ctx);
}

/* -------------------------------------------------------------------- reports */

void cf_report_begin(struct cf_device *dev, const struct cf_bundle *b, enum cf_phase phase,
			 enum cf_reason reason, const char *detail)
{
	struct cf_report *r = &dev->report;

	memset(r, 0, sizeof(*r));
	r->version = CF_VERSION_MAX;
	r->phase = phase;
	r->reason = reason;
	r->time = now(dev);
	size_t n = strlen(detail);
	n = n < CF_REPORT_DETAIL_LEN ? n : CF_REPORT_DETAIL_LEN; /* truncated, as §7 allows */
	memcpy(r->detail, detail, n);
	memcpy(r->active_tags, dev->state.active, dev->state.n_active * sizeof(uint32_t));
	r->n_active = dev->state.n_active;
	if (b != NULL && b->ids_known) {
		memcpy(r->rollout_id, b->p.Bundle_payload_rid.value, b->p.Bundle_payload_rid.len);
		r->seq = b->p.Bundle_payload_seq;
		r->op = (enum cf_op)b->op;
		if (b->op == CF_OP_NONE && b->p.Bundle_payload_op.value != NULL) {
			memcpy(r->op_name, b->p.Bundle_payload_op.value, b->p.Bundle_payload_op.len);
		}
	}
}

/* A report about the open stage when the stage bundle is gone (fallback at commit_by). */
void cf_report_stage(struct cf_device *dev, enum cf_phase phase, enum cf_reason reason,
			 const char *detail)
{
	cf_report_begin(dev, NULL, phase, reason, detail);
	memcpy(dev->report.rollout_id, dev->state.undo_rid, dev->state.undo_rid_len);
	dev->report.seq = dev->state.stage_seq;
	dev->report.op = dev->state.stage_phase >= CF_STAGE_KEYGEN ? CF_OP_KEYGEN : CF_OP_STAGE;
}

int cf_reconnect(struct cf_device *dev)
{
	const struct cf_transport *t = &dev->ports.transport;
	const struct cf_state *st = &dev->state;

	return t->reconnect(t->ctx, st->active, st->n_active,
			    st->has_identity ? &st->identity_tag : NULL);
}

int cf_publish(struct cf_device *dev)
{
	return dev->ports.transport.publish_report(dev->ports.transport.ctx, &dev->report);
}

/* -------------------------------------------------------------------- key store */

static int delete_tag(struct cf_device *dev, uint32_t tag)
{
	for (uint8_t type = 0; type <= CF_CRED_TYPE_MAX; type++) {
		int err = dev->ports.keystore.remove(dev->ports.keystore.ctx, tag, type);
		if (err != 0 && err != -ENOENT) {
			return err;
		}
	}
	return 0;
}

void cf_pend_delete(struct cf_state *st, uint32_t tag)
{
	for (size_t i = 0; i < st->n_pending_delete; i++) {
		if (st->pending_delete[i] == tag) {
			return;
		}
	}
	st->pending_delete[st->n_pending_delete++] = tag;
}

/* Offline, delete every pending tag's items, online; then persist the intent done. */
int cf_finish_deletes(struct cf_device *dev)
{
	struct cf_state *st = &dev->state;
	const struct cf_keystore *ks = &dev->ports.keystore;
	int err = 0;

	if (st->n_pending_delete == 0) {
		return 0;
	}
	err = ks->set_online(ks->ctx, false);
	for (size_t i = 0; err == 0 && i < st->n_pending_delete; i++) {
		err = delete_tag(dev, st->pending_delete[i]);
	}
	int online = ks->set_online(ks->ctx, true);
	if (err != 0 || online != 0) {
		return err != 0 ? err : online;
	}
	st->n_pending_delete = 0;
	return cf_device_persist(dev);
}

void cf_drop_stage(struct cf_state *st)
{
	st->stage_phase = CF_STAGE_NONE;
	st->stage_identity = 0;
	if (st->undo_kind == CF_UNDO_STAGE) {
		st->undo_kind = CF_UNDO_NONE;
		st->undo_identity = 0;
	}
}

/* Discard the open stage: intent (its tag to delete, the record dropped), then act. */
int cf_discard_stage(struct cf_device *dev)
{
	cf_pend_delete(&dev->state, dev->state.stage_tag);
	cf_drop_stage(&dev->state);
	int err = cf_device_persist(dev);
	return err != 0 ? err : cf_finish_deletes(dev);
}

/* -------------------------------------------------------------------- ops */

static void copy_list(uint32_t *out, uint8_t *n_out, const struct Tag_list *list)
{
	for (size_t i = 0; i < list->Tag_list_Sec_tag_m_count; i++) {
		out[i] = (uint32_t)list->Tag_list_Sec_tag_m[i];
	}
	*n_out = (uint8_t)list->Tag_list_Sec_tag_m_count;
}

/* Intent of a new open stage (or keygen) of `b` in `tag`: an earlier open stage goes,
 * leftovers in the tag go, the undo record is this bundle's. */
static void open_stage(struct cf_state *st, const struct cf_bundle *b, uint32_t tag)
{
	const struct Bundle_payload *p = &b->p;

	if (st->stage_phase != CF_STAGE_NONE && st->stage_tag != tag) {
		cf_pend_delete(st, st->stage_tag);
	}
	cf_pend_delete(st, tag);
	st->stage_identity = 0;
	st->undo_kind = CF_UNDO_STAGE;
	st->undo_identity = 0;
	st->undo_tag = tag;
	st->undo_by = 0;
	st->commit_unproven = 0;
	st->undo_rid_len = (uint8_t)p->Bundle_payload_rid.len;
	memcpy(st->undo_rid, p->Bundle_payload_rid.value, p->Bundle_payload_rid.len);
	memcpy(st->undo_previous, st->active, sizeof(st->active));
	st->n_undo_previous = st->n_active;
}

/* The modem refused a write or keygen (key store offline): what the tag holds goes, the
 * stage and its record end, `rejected` with modem_error after `received`. */
static int modem_refused(struct cf_device *dev, const struct cf_bundle *b, uint32_t tag, int code)
{
	const struct cf_keystore *ks = &dev->ports.keystore;
	int err = delete_tag(dev, tag);

	err = err != 0 ? err : ks->set_online(ks->ctx, true);
	if (err != 0) {
		return err;
	}
	cf_drop_stage(&dev->state);
	dev->state.n_pending_delete = 0;
	err = cf_device_persist(dev);
#ifdef CF_NO_DETAILS
	(void)code;
	const char *detail = "";
#else
	char detail[48] = "the modem refused the write (errno ";
	code = code < 0 ? -code : code;
	size_t at = strlen(detail), digits = 1;
	for (int rest = code; rest >= 10; rest /= 10) {
		digits++;
	}
	for (int rest = code, i = 1; i <= (int)digits; rest /= 10, i++) {
		detail[at + digits - (size_t)i] = (char)('0' + rest % 10);
	}
	memcpy(detail + at + digits, ")", 2);
#endif
	cf_report_begin(dev, b, CF_PHASE_REJECTED, CF_REASON_MODEM_ERROR, detail);
	if (b == NULL) { /* a keygen made again after a reboot: its bundle is gone */
		memcpy(dev->report.rollout_id, dev->state.undo_rid, dev->state.undo_rid_len);
		dev->report.seq = dev->state.stage_seq;
		dev->report.op = CF_OP_KEYGEN;
	}
	cf_publish(dev);
	return err;
}

/* Offline, then the intent's deletes (the key store stays offline for the op's writes). */
static int offline_deletes(struct cf_device *dev)
{
	const struct cf_keystore *ks = &dev->ports.keystore;
	int err = ks->set_online(ks->ctx, false);

	for (size_t i = 0; err == 0 && i < dev->state.n_pending_delete; i++) {
		err = delete_tag(dev, dev->state.pending_delete[i]);
	}
	return err;
}

int cf_op_stage(struct cf_device *dev, const struct cf_bundle *b)
{
	struct cf_state *st = &dev->state;
	const struct Bundle_payload *p = &b->p;
	const uint32_t tag = (uint32_t)p->Bundle_payload_tag.Bundle_payload_tag;
	const struct cf_keystore *ks = &dev->ports.keystore;
	const struct Probe *probe = &p->Bundle_payload_probe.Bundle_payload_probe;
	const struct Bundle_payload_creds_r *creds = &p->Bundle_payload_creds;
	/* check 13 let an identity stage through only onto its keygen's record and key */
	const bool identity = creds->Bundle_payload_creds_Credential_m[0].Credential_type ==
			      CF_CRED_TYPE_CLIENT_CERT;

	if (!identity) {
		open_stage(st, b, tag);
	}
	st->stage_phase = CF_STAGE_WRITING;
	st->stage_tag = tag;
	st->stage_seq = p->Bundle_payload_seq;
	st->commit_by = p->Bundle_payload_commit_by.Bundle_payload_commit_by;
	copy_list(st->stage_active, &st->n_stage_active, &p->Bundle_payload_active.Bundle_payload_active);
	copy_list(st->probe_tags, &st->n_probe_tags, &probe->Probe_tags);
	st->probe_port = (uint16_t)probe->Probe_port;
	st->probe_host_len = (uint8_t)probe->Probe_host.len;
	memcpy(st->probe_host, probe->Probe_host.value, probe->Probe_host.len);
	int err = cf_device_persist(dev);
	if (err == 0) {
		err = offline_deletes(dev);
	}
	if (err != 0) {
		return err;
	}
	int written = 0;
	for (size_t i = 0; written == 0 && i < creds->Bundle_payload_creds_Credential_m_count; i++) {
		const struct Credential *cred = &creds->Bundle_payload_creds_Credential_m[i];
		written = ks->write(ks->ctx, tag, (uint8_t)cred->Credential_type,
				    cred->Credential_pem.value, cred->Credential_pem.len);
	}
	if (written != 0) {
		return modem_refused(dev, b, tag, written);
	}
	err = ks->set_online(ks->ctx, true);
	if (err != 0) {
		return err;
	}
	st->n_pending_delete = 0;
	st->stage_phase = CF_STAGE_WRITTEN;
	if ((err = cf_device_persist(dev)) != 0) {
		return err;
	}
	cf_report_begin(dev, b, CF_PHASE_STAGED, CF_REASON_OK, "");
	cf_publish(dev);
	return cf_stage_probe(dev);
}

/* The %KEYGEN answer is base64url, one '.', base64url: JSON-safe as it is. */
static bool csr_field_valid(const char *csr, size_t len)
{
	size_t dots = 0;

	for (size_t i = 0; i < len; i++) {
		char c = csr[i];
		bool b64 = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
			   c == '-' || c == '_';
		dots += c == '.';
		if (!b64 && c != '.') {
			return false;
		}
	}
	return len >= 3 && dots == 1 && csr[0] != '.' && csr[len - 1] != '.';
}

int cf_op_keygen(struct cf_device *dev, const struct cf_bundle *b)
{
	struct cf_state *st = &dev->state;
	const struct Bundle_payload *p = &b->p;
	const uint32_t tag = (uint32_t)p->Bundle_payload_tag.Bundle_payload_tag;
	const struct zcbor_string *subject = &p->Bundle_payload_subject.Bundle_payload_subject;

	/* intent: the tag's items go and a key is made; the record returns to this identity */
	open_stage(st, b, tag);
	st->stage_identity = 1;
	st->undo_identity = 1;
	st->undo_had_identity = st->has_identity;
	st->undo_prev_identity = st->identity_tag;
	st->stage_phase = CF_STAGE_MAKING_KEY;
	st->stage_tag = tag;
	st->stage_seq = p->Bundle_payload_seq;
	st->commit_by = p->Bundle_payload_commit_by.Bundle_payload_commit_by;
	st->n_stage_active = 0;
	st->subject_len = (uint8_t)subject->len;
	memcpy(st->subject, subject->value, subject->len);
	int err = cf_device_persist(dev);
	return err != 0 ? err : cf_make_key(dev, b);
}

int cf_make_key(struct cf_device *dev, const struct cf_bundle *b)
{
	struct cf_state *st = &dev->state;
	const struct cf_keystore *ks = &dev->ports.keystore;
	char csr[CF_CSR_FIELD_MAX_BYTES + 1]; /* on the stack while it is reported */
	size_t csr_len = 0;
	int err = offline_deletes(dev);

	if (err != 0) {
		return err;
	}
	int made = ks->keygen(ks->ctx, st->stage_tag, st->subject, st->subject_len, st->stage_seq,
			      csr, sizeof(csr), &csr_len);
	if (made == 0 && (csr_len >= sizeof(csr) || !csr_field_valid(csr, csr_len))) {
		made = -EBADMSG; /* not what %KEYGEN answers: the key is not used */
	}
	if (made != 0) {
		return modem_refused(dev, b, st->stage_tag, made);
	}
	if ((err = ks->set_online(ks->ctx, true)) != 0) {
		return err;
	}
	st->n_pending_delete = 0;
	st->stage_phase = CF_STAGE_KEYGEN;
	if ((err = cf_device_persist(dev)) != 0) {
		return err;
	}
	csr[csr_len] = '\0';
	cf_report_stage(dev, CF_PHASE_CSR, CF_REASON_OK, ""); /* the bundle's rid, seq, op */
	dev->report.csr = csr;
	cf_publish(dev);
	dev->report.csr = NULL;
	return 0;
}

int cf_stage_probe(struct cf_device *dev)
{
	struct cf_state *st = &dev->state;
	enum cf_reason result = dev->ports.probe.run(dev->ports.probe.ctx, st->probe_host,
						     st->probe_host_len, st->probe_port,
						     st->probe_tags, st->n_probe_tags,
						     st->stage_identity ? &st->stage_tag : NULL);
	if (result == CF_REASON_OK) {
		st->stage_phase = CF_STAGE_HEALTHY;
		int err = cf_device_persist(dev);
		if (err != 0) {
			return err;
		}
		cf_report_stage(dev, CF_PHASE_HEALTH_OK, CF_REASON_OK, "");
		cf_publish(dev);
		return 0;
	}
	cf_report_stage(dev, CF_PHASE_HEALTH_FAILED, result,
			result == CF_REASON_IDENTITY_REFUSED
				? CF_DETAIL("the server refused the staged client certificate")
				: CF_DETAIL("the probe failed with the staged tag"));
	cf_publish(dev);
	return cf_discard_stage(dev);
}

int cf_op_commit(struct cf_device *dev, const struct cf_bundle *b)
{
	struct cf_state *st = &dev->state;
	uint32_t list[CF_TAG_LIST_MAX];
	size_t n = st->stage_identity ? st->n_active : cf_commit_list(st, b, list);

	if (st->stage_identity) { /* the identity changes, the active list stays */
		memcpy(list, st->active, sizeof(list));
		st->has_identity = 1;
		st->identity_tag = st->stage_tag;
		st->stage_identity = 0;
	}
	st->undo_kind = CF_UNDO_COMMIT;
	st->undo_tag = st->stage_tag;
	st->undo_by = b->p.Bundle_payload_undo_by_present ? b->p.Bundle_payload_undo_by.Bundle_payload_undo_by : 0;
	memcpy(st->undo_previous, st->active, sizeof(st->active));
	st->n_undo_previous = st->n_active;
	memcpy(st->active, list, n * sizeof(list[0]));
	st->n_active = (uint8_t)n;
	st->stage_phase = CF_STAGE_NONE;
	st->commit_unproven = dev->ports.transport.reconnect != NULL;
	int err = cf_device_persist(dev);
	if (err != 0) {
		return err;
	}
	if (st->commit_unproven) {
		return cf_device_boot(dev); /* proves the list on the broker, or falls back */
	}
	cf_report_begin(dev, b, CF_PHASE_COMMITTED, CF_REASON_OK, "");
	cf_publish(dev);
	return 0;
}

/* Return to the undo record's previous list; its tag goes unless that list names it. */
int cf_undo_commit(struct cf_device *dev)
{
	struct cf_state *st = &dev->state;

	memcpy(st->active, st->undo_previous, sizeof(st->active));
	st->n_active = st->n_undo_previous;
	bool kept = false;
	for (size_t i = 0; i < st->n_active; i++) {
		kept |= st->active[i] == st->undo_tag;
	}
	if (st->undo_identity) { /* back to the identity before the commit */
		st->has_identity = st->undo_had_identity;
		st->identity_tag = st->undo_prev_identity;
		kept = st->has_identity && st->identity_tag == st->undo_tag;
	}
	if (!kept) {
		cf_pend_delete(st, st->undo_tag);
	}
	st->undo_kind = CF_UNDO_NONE;
	st->undo_identity = 0;
	st->commit_unproven = 0;
	int err = cf_device_persist(dev);
	return err != 0 ? err : cf_finish_deletes(dev);
}

int cf_op_rollback(struct cf_device *dev, const struct cf_bundle *b)
{
	const bool identity_commit = dev->state.undo_kind == CF_UNDO_COMMIT && dev->state.undo_identity;
	int err = dev->state.undo_kind == CF_UNDO_STAGE ? cf_discard_stage(dev) : cf_undo_commit(dev);
	if (err != 0) {
		return err;
	}
	if (identity_commit && dev->ports.transport.reconnect != NULL) {
		cf_reconnect(dev); /* the broker connection presents the previous identity again */
	}
	cf_report_begin(dev, b, CF_PHASE_ROLLED_BACK, CF_REASON_OK, "");
	cf_publish(dev);
	return 0;
}

int cf_op_retire(struct cf_device *dev, const struct cf_bundle *b)
{
	struct cf_state *st = &dev->state;
	const struct Tag_list *tags = &b->p.Bundle_payload_tags.Bundle_payload_tags;
	const bool prove = dev->ports.transport.reconnect != NULL;

	memcpy(st->retire_previous, st->active, sizeof(st->active));
	st->n_retire_previous = st->n_active;
	copy_list(st->active, &st->n_active, &b->p.Bundle_payload_active.Bundle_payload_active);
	if (st->stage_phase != CF_STAGE_NONE) {
		cf_pend_delete(st, st->stage_tag); /* the open stage ends with the record */
		st->stage_phase = CF_STAGE_NONE;
		st->stage_identity = 0;
	}
	copy_list(st->retire_tags, &st->n_retire_tags, tags);
	for (size_t i = 0; !prove && i < st->n_retire_tags; i++) {
		cf_pend_delete(st, st->retire_tags[i]);
	}
	st->undo_kind = CF_UNDO_NONE;
	st->undo_identity = 0;
	st->retire_unproven = prove;
	st->undo_rid_len = (uint8_t)b->p.Bundle_payload_rid.len;
	memcpy(st->undo_rid, b->p.Bundle_payload_rid.value, b->p.Bundle_payload_rid.len);
	int err = cf_device_persist(dev);
	if (err == 0) {
		err = cf_finish_deletes(dev);
	}
	if (err != 0 || prove) {
		return err != 0 ? err : cf_device_boot(dev); /* proves the list, then deletes */
	}
	cf_report_begin(dev, b, CF_PHASE_RETIRED, CF_REASON_OK, "");
	cf_publish(dev);
	return 0;
}

/* A root op's state is in force once persisted (with the seq): `committed`. (One copy:
 * both root ops share it.) */
__attribute__((noinline)) static int root_op_committed(struct cf_device *dev, const struct cf_bundle *b, const char *detail)
{
	int err = cf_device_persist(dev);
	if (err != 0) {
		return err;
	}
	cf_report_begin(dev, b, CF_PHASE_COMMITTED, CF_REASON_OK, detail);
	cf_publish(dev);
	return 0;
}

int cf_op_trust_signer(struct cf_device *dev, const struct cf_bundle *b)
{
	struct cf_state *st = &dev->state;
	const struct Signer *signer = &b->p.Bundle_payload_signer.Bundle_payload_signer;
	const struct zcbor_string *retire = &b->p.Bundle_payload_retire_kid.Bundle_payload_retire_kid;
	/* the keys before the retirement may be one more than the device keeps */
	struct cf_signer keys[CF_SIGNERS_MAX + 1];
	size_t n_keys = 0, n = 0;
	bool replaced = false;

	for (size_t i = 0; i < st->n_signers; i++) {
		keys[n_keys] = st->signers[i];
		if (memcmp(keys[n_keys].kid, signer->Signer_kid.value, CF_KID_LEN) == 0) {
			memcpy(keys[n_keys].pub, signer->Signer_pub.value, CF_P256_POINT_LEN);
			replaced = true;
		}
		n_keys++;
	}
	if (!replaced) {
		memcpy(keys[n_keys].kid, signer->Signer_kid.value, CF_KID_LEN);
		memcpy(keys[n_keys].pub, signer->Signer_pub.value, CF_P256_POINT_LEN);
		n_keys++;
	}
	for (size_t i = 0; i < n_keys; i++) {
		bool retired = b->p.Bundle_payload_retire_kid_present && retire->len == CF_KID_LEN &&
			       memcmp(retire->value, keys[i].kid, CF_KID_LEN) == 0;
		if (!retired && n < CF_SIGNERS_MAX) { /* check 13 keeps it at CF_SIGNERS_MAX */
			st->signers[n++] = keys[i];
		}
	}
	st->n_signers = (uint8_t)n;
	return root_op_committed(dev, b, CF_DETAIL("the signer is trusted"));
}


int cf_op_revoke(struct cf_device *dev, const struct cf_bundle *b)
{
	struct cf_state *st = &dev->state;
	const struct Bundle_payload_kids_r *kids = &b->p.Bundle_payload_kids;
	const uint64_t before = b->p.Bundle_payload_before.Bundle_payload_before;

	/* the whole list is sent each time: it replaces the device's (check 6 bounds it) */
	st->n_revoked = (uint8_t)kids->Bundle_payload_kids_bstr_count;
	memset(st->revoked, 0, sizeof(st->revoked));
	for (size_t i = 0; i < st->n_revoked; i++) {
		memcpy(st->revoked[i], kids->Bundle_payload_kids_bstr[i].value, CF_KID_LEN);
	}
	st->revoked_before = before > st->revoked_before ? before : st->revoked_before;
	return root_op_committed(dev, b, CF_DETAIL("the revocations are kept"));
}
