/*
 * The device state machine of docs/protocol.md §5 with contract v2's undo record.
 *
 * Crash consistency: each op persists its intent (the new state plus the sec_tags to
 * delete) before it touches the key store, then acts, then persists the outcome. A
 * power cut between any two port calls leaves either the old record (nothing was
 * done) or the intent, which cf_device_boot finishes: it deletes what the intent
 * names, and discards a stage that had not passed its probe. The active list only
 * ever names tags that hold a CA chain: a commit, rollback or retire is checked
 * (check 13) before its intent is written, and a stage never writes an active tag.
 */
#include <errno.h>
#include <string.h>

#include "certfleet/device.h"
#include "checks.h"
#include "ops.h"
#include "record_frame.h"

static uint64_t now(struct cf_device *dev)
{
	return dev->ports.clock.now(dev->ports.clock.ctx);
}

int cf_device_persist(struct cf_device *dev)
{
	uint8_t frame[CF_RECORD_FRAME_LEN];

	cf_record_frame(&dev->state, frame);
	return dev->ports.record.store(dev->ports.record.ctx, frame, sizeof(frame));
}

int cf_device_init(struct cf_device *dev, const char *device_id,
		   const struct cf_device_ports *ports)
{
	uint8_t frame[CF_RECORD_FRAME_LEN];
	size_t len = 0;

	memset(dev, 0, sizeof(*dev));
	if (strlen(device_id) > CF_DEVICE_ID_MAX) {
		return -EINVAL;
	}
	strcpy(dev->device_id, device_id);
	dev->ports = *ports;
	int err = ports->record.load(ports->record.ctx, frame, sizeof(frame), &len);
	if (err != 0) {
		return err;
	}
	return cf_record_unframe(frame, len, &dev->state);
}

int cf_device_provision(struct cf_device *dev, const struct cf_signer *signers, size_t n_signers,
			const uint32_t *active, size_t n_active)
{
	if (n_signers < 1 || n_signers > CF_SIGNERS_MAX || n_active < 1 ||
	    n_active > CF_TAG_LIST_MAX) {
		return -EINVAL;
	}
	memset(&dev->state, 0, sizeof(dev->state));
	memcpy(dev->state.signers, signers, n_signers * sizeof(signers[0]));
	dev->state.n_signers = (uint8_t)n_signers;
	memcpy(dev->state.active, active, n_active * sizeof(active[0]));
	dev->state.n_active = (uint8_t)n_active;
	return cf_device_persist(dev);
}

int cf_device_provision_identity(struct cf_device *dev, uint32_t tag)
{
	const struct cf_keystore *ks = &dev->ports.keystore;
	bool cert = false, key = false;

	for (size_t i = 0; i < dev->state.n_active; i++) {
		if (dev->state.active[i] == tag) {
			return -EINVAL;
		}
	}
	if (ks->exists(ks->ctx, tag, CF_CRED_TYPE_CLIENT_CERT, &cert) != 0 ||
	    ks->exists(ks->ctx, tag, CF_CRED_TYPE_CLIENT_KEY, &key) != 0 || !cert || !key) {
		return -EINVAL;
	}
	dev->state.has_identity = 1;
	dev->state.identity_tag = tag;
	return cf_device_persist(dev);
}

/* -------------------------------------------------------------------- entry points */

/*
 * A port failed in the middle of an op: the state in memory may hold changes the record
 * does not. Take the record back and finish or undo from it, as after a power cut.
 */
static int recover(struct cf_device *dev, int err)
{
	uint8_t frame[CF_RECORD_FRAME_LEN];
	size_t len = 0;
	struct cf_state stored;

	if (dev->ports.record.load(dev->ports.record.ctx, frame, sizeof(frame), &len) == 0 &&
	    cf_record_unframe(frame, len, &stored) == 0) {
		dev->state = stored;
	}
	cf_device_boot(dev);
	return err;
}

int cf_device_handle(struct cf_device *dev, const uint8_t *buf, size_t len)
{
	struct cf_bundle bundle;
	const struct cf_bundle_env env = {
		.device_id = dev->device_id,
		.last_seq = dev->state.last_seq,
		.now = now(dev),
		.signers = dev->state.signers,
		.n_signers = dev->state.n_signers,
		.revoked = dev->state.revoked,
		.n_revoked = dev->state.n_revoked,
		.revoked_before = dev->state.revoked_before,
	};
	enum cf_reason reason = cf_bundle_open(buf, len, &env, &bundle);
	const char *detail = bundle.detail;

	if (reason == CF_REASON_OK) {
		reason = cf_check_operation(dev, &bundle, env.now, &detail);
	}
	if (reason != CF_REASON_OK) {
		cf_report_begin(dev, &bundle, CF_PHASE_REJECTED, reason, detail);
		cf_publish(dev);
		return 0;
	}
	cf_report_begin(dev, &bundle, CF_PHASE_RECEIVED, CF_REASON_OK, "");
	if (cf_publish(dev) != 0) {
		return -EAGAIN; /* not acknowledged: nothing done, the seq stays unused */
	}
	dev->state.last_seq = bundle.p.Bundle_payload_seq;
	int err;
	switch (bundle.op) {
	case CF_OP_STAGE:
		err = cf_op_stage(dev, &bundle);
		break;
	case CF_OP_COMMIT:
		err = cf_op_commit(dev, &bundle);
		break;
	case CF_OP_ROLLBACK:
		err = cf_op_rollback(dev, &bundle);
		break;
	case CF_OP_RETIRE:
		err = cf_op_retire(dev, &bundle);
		break;
	case CF_OP_KEYGEN:
		err = cf_op_keygen(dev, &bundle);
		break;
	case CF_OP_REVOKE:
		err = cf_op_revoke(dev, &bundle);
		break;
	default:
		err = cf_op_trust_signer(dev, &bundle);
		break;
	}
	return err != 0 ? recover(dev, err) : 0;
}

/* A retire's list the broker has not validated yet: prove it, then delete; else return. */
static int prove_retire(struct cf_device *dev)
{
	struct cf_state *st = &dev->state;
	const bool proven = cf_reconnect(dev) == 0;

	if (proven) {
		for (size_t i = 0; i < st->n_retire_tags; i++) {
			cf_pend_delete(st, st->retire_tags[i]);
		}
	} else {
		memcpy(st->active, st->retire_previous, sizeof(st->active));
		st->n_active = st->n_retire_previous;
	}
	st->retire_unproven = 0;
	int err = cf_device_persist(dev);
	if (err == 0) {
		err = cf_finish_deletes(dev);
	}
	if (err != 0) {
		return err;
	}
	if (!proven) {
		cf_reconnect(dev); /* the old, working trust */
	}
	cf_report_begin(dev, NULL, proven ? CF_PHASE_RETIRED : CF_PHASE_FALLBACK,
			proven ? CF_REASON_OK : CF_REASON_BROKER_UNREACHABLE,
			proven ? "" : CF_DETAIL("the broker's chain did not validate with the new tag list"));
	memcpy(dev->report.rollout_id, st->undo_rid, st->undo_rid_len);
	dev->report.seq = st->last_seq;
	dev->report.op = CF_OP_RETIRE;
	cf_publish(dev);
	return 0;
}

int cf_device_boot(struct cf_device *dev)
{
	struct cf_state *st = &dev->state;
	int err = 0;

	/* a keygen cut before its key was made makes it again (its subject is kept) */
	if (st->stage_phase == CF_STAGE_MAKING_KEY) {
		err = cf_make_key(dev, NULL);
	}
	/* a stage cut while writing is undone (its credentials are not kept in flash) */
	if (err == 0 && st->stage_phase == CF_STAGE_WRITING) {
		cf_pend_delete(st, st->stage_tag);
		cf_drop_stage(st);
		err = cf_device_persist(dev);
	}
	if (err == 0) {
		err = cf_finish_deletes(dev);
	}
	/* a stage written but not probed is probed once online, as §13 says */
	if (err == 0 && st->stage_phase == CF_STAGE_WRITTEN) {
		cf_report_stage(dev, CF_PHASE_STAGED, CF_REASON_OK, "");
		cf_publish(dev);
		err = cf_stage_probe(dev);
	}
	if (err == 0 && st->retire_unproven) {
		return prove_retire(dev);
	}
	if (err != 0 || !st->commit_unproven) {
		return err;
	}
	/* a commit (of a list or an identity) the broker has not accepted yet: prove it, else
	 * fall back */
	if (cf_reconnect(dev) == 0) {
		st->commit_unproven = 0;
		err = cf_device_persist(dev);
		cf_report_stage(dev, CF_PHASE_COMMITTED, CF_REASON_OK, "");
		dev->report.op = CF_OP_COMMIT;
		dev->report.seq = st->last_seq;
		cf_publish(dev);
		return err;
	}
	uint64_t stage_seq = st->stage_seq;
	const bool identity = st->undo_identity;
	if ((err = cf_undo_commit(dev)) != 0) {
		return err;
	}
	cf_reconnect(dev);
	cf_report_stage(dev, CF_PHASE_FALLBACK, CF_REASON_BROKER_UNREACHABLE,
			identity ? CF_DETAIL("the broker refused the connection with the new identity")
				 : CF_DETAIL("the broker's chain did not validate with the new tag list"));
	dev->report.seq = stage_seq;
	cf_publish(dev);
	return 0;
}

int cf_device_tick(struct cf_device *dev)
{
	struct cf_state *st = &dev->state;
	uint64_t t = now(dev);

	if ((st->stage_phase == CF_STAGE_HEALTHY || st->stage_phase == CF_STAGE_KEYGEN) &&
	    t >= st->commit_by) {
		cf_report_stage(dev, CF_PHASE_FALLBACK, CF_REASON_COMMIT_TIMEOUT,
				st->stage_phase == CF_STAGE_KEYGEN
					? CF_DETAIL("no certificate before commit_by; the key was deleted")
					: CF_DETAIL("no commit before commit_by; the staged items were deleted"));
		int err = cf_discard_stage(dev);
		if (err != 0) {
			return recover(dev, err);
		}
		cf_publish(dev);
	}
	if (st->undo_kind == CF_UNDO_COMMIT && !cf_undo_live(st, t)) {
		st->undo_kind = CF_UNDO_NONE;
		st->undo_identity = 0;
		return cf_device_persist(dev);
	}
	return 0;
}
