/*
 * Check 13 and the state machine: every op, every reason a device state decides,
 * the undo record of contract v2, fallback at commit_by, a TLS broker that refuses a
 * committed list, and a `received` the broker never acknowledged.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "device_harness.h"
#include "record_frame.h"

static struct harness h;

static void expect_phases(size_t from, const enum cf_phase *phases, size_t n)
{
	assert_int_equal(h.world.n_reports - from, n);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(h.world.reports[from + i].phase, phases[i]);
	}
}

static void expect_rejected(const char *name, enum cf_reason reason)
{
	struct cf_state before = h.dev.state;
	size_t reports = h.world.n_reports;
	assert_int_equal(harness_send(&h, name), 0);
	assert_int_equal(h.world.n_reports, reports + 1);
	const struct cf_report *r = fake_last_report(&h.world);
	assert_int_equal(r->phase, CF_PHASE_REJECTED);
	if (r->reason != reason) {
		fail_msg("%s: %s, expected %s", name, cf_reason_str(r->reason), cf_reason_str(reason));
	}
	/* nothing changed, the seq not consumed, and the rejection names the bundle */
	assert_memory_equal(&before, &h.dev.state, sizeof(before));
	assert_true(r->seq > 0);
	harness_assert_trust_works(&h);
}

/* A rejection of checks 1 to 5d: nothing changed, and the report names no bundle. */
static void expect_unverified(const char *name, enum cf_reason reason)
{
	struct cf_state before = h.dev.state;
	size_t reports = h.world.n_reports;
	assert_int_equal(harness_send(&h, name), 0);
	assert_int_equal(h.world.n_reports, reports + 1);
	const struct cf_report *r = fake_last_report(&h.world);
	assert_int_equal(r->phase, CF_PHASE_REJECTED);
	if (r->reason != reason) {
		fail_msg("%s: %s, expected %s", name, cf_reason_str(r->reason), cf_reason_str(reason));
	}
	assert_memory_equal(&before, &h.dev.state, sizeof(before));
	assert_int_equal(r->seq, 0);
	assert_string_equal(r->rollout_id, "");
	assert_int_equal(r->op, CF_OP_NONE);
	assert_string_equal(r->op_name, "");
}

static void expect_phase(const char *name, enum cf_phase phase)
{
	assert_int_equal(harness_send(&h, name), 0);
	const struct cf_report *r = fake_last_report(&h.world);
	if (r->phase != phase) {
		fail_msg("%s: %s (%s), expected %s", name, cf_phase_str(r->phase),
			 cf_reason_str(r->reason), cf_phase_str(phase));
	}
}

static void stage_healthy(void)
{
	assert_int_equal(harness_send(&h, "s-stage"), 0);
	assert_int_equal(fake_last_report(&h.world)->phase, CF_PHASE_HEALTH_OK);
}

static void commit(void)
{
	stage_healthy();
	assert_int_equal(harness_send(&h, "s-commit"), 0);
	assert_int_equal(fake_last_report(&h.world)->phase, CF_PHASE_COMMITTED);
}

static int setup(void **state)
{
	harness_init(&h, *state != NULL);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	fake_world_free(&h.world);
	return 0;
}

/* A stage writes the spare tag offline, reports staged then health_ok, keeps the list. */
static void test_stage_writes_the_spare_tag_and_probes_it(void **state)
{
	(void)state;
	const enum cf_phase phases[] = {CF_PHASE_RECEIVED, CF_PHASE_STAGED, CF_PHASE_HEALTH_OK};
	stage_healthy();
	expect_phases(0, phases, 3);
	assert_true(fake_keystore_has(&h.world, SPARE_TAG, 0));
	assert_int_equal(h.dev.state.n_active, 1);
	assert_int_equal(h.dev.state.last_seq, h.ctx.last_seq + 1);
	assert_int_equal(h.dev.state.undo_kind, CF_UNDO_STAGE);
	assert_string_equal(h.world.reports[2].rollout_id, "r-1");
	assert_int_equal(h.world.reports[2].op, CF_OP_STAGE);
	harness_assert_trust_works(&h);
}

/* A failed probe reports its reason, deletes the staged item and drops the record. */
static void test_failed_probe_deletes_the_stage(void **state)
{
	(void)state;
	h.world.probe_result = CF_REASON_EXPIRED;
	assert_int_equal(harness_send(&h, "s-stage"), 0);
	const struct cf_report *r = fake_last_report(&h.world);
	assert_int_equal(r->phase, CF_PHASE_HEALTH_FAILED);
	assert_int_equal(r->reason, CF_REASON_EXPIRED);
	assert_false(fake_keystore_has(&h.world, SPARE_TAG, 0));
	assert_int_equal(h.dev.state.undo_kind, CF_UNDO_NONE);
	expect_rejected("s-rollback", CF_REASON_NOTHING_TO_UNDO);
}

/* A modem that refuses the write: rejected with modem_error after received, nothing kept. */
static void test_modem_refusal_is_modem_error(void **state)
{
	(void)state;
	const enum cf_phase phases[] = {CF_PHASE_RECEIVED, CF_PHASE_REJECTED};
	assert_int_equal(harness_send(&h, "s-stage-modem-refuses"), 0);
	expect_phases(0, phases, 2);
	assert_int_equal(fake_last_report(&h.world)->reason, CF_REASON_MODEM_ERROR);
	assert_false(fake_keystore_has(&h.world, SPARE_TAG, 0));
	assert_int_equal(h.dev.state.undo_kind, CF_UNDO_NONE);
	harness_assert_trust_works(&h);
}

/* Stage refusals: into an active tag, or naming a future list without a CA. */
static void test_stage_refusals(void **state)
{
	(void)state;
	expect_rejected("s-stage-into-active", CF_REASON_TAG_IN_USE);
	expect_rejected("s-stage-active-without-ca", CF_REASON_UNSAFE_ACTIVE);
}

/* A commit installs the stage's list and turns the record into a commit record. */
static void test_commit_installs_the_list(void **state)
{
	(void)state;
	commit();
	assert_int_equal(h.dev.state.n_active, 2);
	assert_int_equal(h.dev.state.active[1], SPARE_TAG);
	assert_int_equal(h.dev.state.undo_kind, CF_UNDO_COMMIT);
	assert_int_equal(h.dev.state.undo_by, h.ctx.now + 7 * 86400);
	assert_int_equal(fake_last_report(&h.world)->n_active, 2);
	harness_assert_trust_works(&h);
}

/* Commit refusals: nothing staged, another tag, or a list naming a tag without a CA. */
static void test_commit_refusals(void **state)
{
	(void)state;
	expect_rejected("s-commit", CF_REASON_NOTHING_STAGED);
	stage_healthy();
	expect_rejected("s-commit-44", CF_REASON_NOTHING_STAGED);
	expect_rejected("s-commit-active-44", CF_REASON_UNSAFE_ACTIVE);
}

/* No commit by commit_by: the device deletes the stage and reports fallback itself. */
static void test_fallback_at_commit_by(void **state)
{
	(void)state;
	stage_healthy();
	h.world.now = h.dev.state.commit_by - 1;
	assert_int_equal(cf_device_tick(&h.dev), 0);
	assert_true(fake_keystore_has(&h.world, SPARE_TAG, 0));
	h.world.now = h.dev.state.commit_by;
	assert_int_equal(cf_device_tick(&h.dev), 0);
	const struct cf_report *r = fake_last_report(&h.world);
	assert_int_equal(r->phase, CF_PHASE_FALLBACK);
	assert_int_equal(r->reason, CF_REASON_COMMIT_TIMEOUT);
	assert_int_equal(r->op, CF_OP_STAGE);
	assert_int_equal(r->seq, h.ctx.last_seq + 1);
	assert_false(fake_keystore_has(&h.world, SPARE_TAG, 0));
	assert_int_equal(h.dev.state.stage_phase, CF_STAGE_NONE);
	harness_assert_trust_works(&h);
}

/* A rollback of an open stage deletes it; a second rollback has nothing to undo. */
static void test_rollback_of_a_stage(void **state)
{
	(void)state;
	stage_healthy();
	assert_int_equal(harness_send(&h, "s-rollback-after-stage"), 0);
	assert_int_equal(fake_last_report(&h.world)->phase, CF_PHASE_ROLLED_BACK);
	assert_false(fake_keystore_has(&h.world, SPARE_TAG, 0));
	expect_rejected("s-rollback-again", CF_REASON_NOTHING_TO_UNDO);
}

/* A rollback of a commit restores the previous list and deletes the committed tag. */
static void test_rollback_of_a_commit(void **state)
{
	(void)state;
	commit();
	assert_int_equal(harness_send(&h, "s-rollback"), 0);
	assert_int_equal(fake_last_report(&h.world)->phase, CF_PHASE_ROLLED_BACK);
	assert_int_equal(h.dev.state.n_active, 1);
	assert_int_equal(h.dev.state.active[0], ACTIVE_TAG);
	assert_false(fake_keystore_has(&h.world, SPARE_TAG, 0));
	expect_rejected("s-rollback-again", CF_REASON_NOTHING_TO_UNDO);
	harness_assert_trust_works(&h);
}

/* A rollback of another rollout, or a manual one of a rollout's change, is superseded. */
static void test_rollback_of_another_rollout_is_superseded(void **state)
{
	(void)state;
	commit();
	expect_rejected("s-rollback-other-rollout", CF_REASON_SUPERSEDED);
	expect_rejected("s-rollback-manual", CF_REASON_SUPERSEDED);
}

/* Past undo_by the commit is permanent: the tick drops the record. */
static void test_undo_by_makes_the_commit_permanent(void **state)
{
	(void)state;
	commit();
	h.world.now = h.dev.state.undo_by - 1;
	assert_int_equal(cf_device_tick(&h.dev), 0);
	assert_int_equal(h.dev.state.undo_kind, CF_UNDO_COMMIT);
	h.dev.state.undo_by = h.ctx.now; /* expired while the rollback is still valid */
	h.world.now = h.ctx.now;
	expect_rejected("s-rollback", CF_REASON_NOTHING_TO_UNDO);
	h.world.now = h.dev.state.undo_by;
	assert_int_equal(cf_device_tick(&h.dev), 0);
	assert_int_equal(h.dev.state.undo_kind, CF_UNDO_NONE);
}

/* A v1 commit carries no undo_by: the record stays until a later change. */
static void test_v1_commit_keeps_its_record(void **state)
{
	(void)state;
	stage_healthy();
	assert_int_equal(harness_send(&h, "s-commit-v1"), 0);
	assert_int_equal(h.dev.state.undo_kind, CF_UNDO_COMMIT);
	assert_int_equal(h.dev.state.undo_by, 0);
	h.world.now = UINT32_MAX;
	assert_int_equal(cf_device_tick(&h.dev), 0);
	assert_int_equal(h.dev.state.undo_kind, CF_UNDO_COMMIT);
}

/* A retire installs its list, deletes the retired tags and drops the undo record. */
static void test_retire(void **state)
{
	(void)state;
	commit();
	assert_int_equal(harness_send(&h, "s-retire"), 0);
	assert_int_equal(fake_last_report(&h.world)->phase, CF_PHASE_RETIRED);
	assert_int_equal(h.dev.state.n_active, 1);
	assert_int_equal(h.dev.state.active[0], SPARE_TAG);
	assert_false(fake_keystore_has(&h.world, ACTIVE_TAG, 0));
	assert_int_equal(h.dev.state.undo_kind, CF_UNDO_NONE);
	harness_assert_trust_works(&h);
}

/* A retire whose list keeps a retired tag, or names an empty tag, is unsafe_active. */
static void test_retire_refusals(void **state)
{
	(void)state;
	commit();
	expect_rejected("s-retire-keeps-retired", CF_REASON_UNSAFE_ACTIVE);
	expect_rejected("s-retire-to-empty-tag", CF_REASON_UNSAFE_ACTIVE);
}

/* Trust-signer adds keys up to 4; a fifth, none left, or a bad point are refused. */
static void test_trust_signer(void **state)
{
	(void)state;
	expect_rejected("s-ts-retire-all", CF_REASON_INVALID_OPERATION);
	expect_rejected("s-ts-not-a-point", CF_REASON_BAD_PAYLOAD);
	assert_int_equal(harness_send(&h, "s-ts-1"), 0);
	assert_int_equal(fake_last_report(&h.world)->phase, CF_PHASE_COMMITTED);
	assert_int_equal(harness_send(&h, "s-ts-2"), 0);
	assert_int_equal(harness_send(&h, "s-ts-3"), 0);
	assert_int_equal(h.dev.state.n_signers, CF_SIGNERS_MAX);
	expect_rejected("s-ts-4", CF_REASON_INVALID_OPERATION);
}

/* With 4 keys, adding a fifth while retiring one keeps 4 and touches nothing else. */
static void test_trust_signer_swap_at_the_limit(void **state)
{
	(void)state;
	assert_int_equal(harness_send(&h, "s-ts-1"), 0);
	assert_int_equal(harness_send(&h, "s-ts-2"), 0);
	assert_int_equal(harness_send(&h, "s-ts-3"), 0);
	struct cf_state before = h.dev.state;
	assert_int_equal(harness_send(&h, "s-ts-4-retire-0"), 0);
	assert_int_equal(fake_last_report(&h.world)->phase, CF_PHASE_COMMITTED);
	assert_int_equal(h.dev.state.n_signers, CF_SIGNERS_MAX);
	assert_memory_equal(h.dev.state.signers[0].kid, h.ctx.keys[0].kid, CF_KID_LEN);
	assert_memory_equal(h.dev.state.signers[1].kid, h.ctx.keys[2].kid, CF_KID_LEN);
	assert_memory_equal(h.dev.state.signers[3].kid, h.ctx.keys[4].kid, CF_KID_LEN);
	/* everything after the signer keys is as it was (the seq aside) */
	before.last_seq = h.dev.state.last_seq;
	memcpy(before.signers, h.dev.state.signers, sizeof(before.signers));
	assert_memory_equal(&before, &h.dev.state, sizeof(before));
}

/* Once its key is retired, the old signer's bundles are unknown_key. */
static void test_retired_signer_is_unknown(void **state)
{
	(void)state;
	assert_int_equal(harness_send(&h, "s-ts-retire-only"), 0);
	assert_int_equal(h.dev.state.n_signers, 1);
	assert_memory_equal(h.dev.state.signers[0].kid, h.ctx.keys[1].kid, CF_KID_LEN);
	assert_int_equal(harness_send(&h, "s-after-ts-retire"), 0);
	assert_int_equal(fake_last_report(&h.world)->reason, CF_REASON_UNKNOWN_KEY);
	assert_int_equal(fake_last_report(&h.world)->seq, 0);
}

/* An unacknowledged `received`: nothing done, the seq unused, a redelivery is new. */
static void test_unacknowledged_received_does_nothing(void **state)
{
	(void)state;
	h.world.publish_result = -ENOTCONN;
	assert_int_equal(harness_send(&h, "s-stage"), -EAGAIN);
	assert_int_equal(h.dev.state.last_seq, h.ctx.last_seq);
	assert_false(fake_keystore_has(&h.world, SPARE_TAG, 0));
	h.world.publish_result = 0;
	stage_healthy();
	expect_rejected("s-stage", CF_REASON_REPLAY);
}

/* Over TLS a commit is proven on the broker; a list that fails it falls back at once. */
static void test_tls_commit_falls_back_when_the_broker_refuses(void **state)
{
	(void)state;
	stage_healthy();
	h.world.reconnect_result = -ECONNREFUSED;
	assert_int_equal(harness_send(&h, "s-commit"), 0);
	const struct cf_report *r = fake_last_report(&h.world);
	assert_int_equal(r->phase, CF_PHASE_FALLBACK);
	assert_int_equal(r->reason, CF_REASON_BROKER_UNREACHABLE);
	assert_int_equal(h.dev.state.n_active, 1);
	assert_false(fake_keystore_has(&h.world, SPARE_TAG, 0));
	harness_assert_trust_works(&h);
}

/* Over TLS a commit the broker accepts is reported committed. */
static void test_tls_commit_proven(void **state)
{
	(void)state;
	commit();
	assert_int_equal(h.dev.state.commit_unproven, 0);
	assert_int_equal(h.dev.state.n_active, 2);
}

/* A record with a flipped bit, or with a count past its array, is refused at init. */
static void test_corrupt_record_is_refused(void **state)
{
	(void)state;
	uint8_t frame[CF_RECORD_FRAME_LEN];
	struct cf_device_ports ports = fake_ports(&h.world);
	struct cf_state bad = h.dev.state;
	static struct cf_device again;

	cf_record_frame(&h.dev.state, frame);
	frame[20] ^= 0x01;
	assert_int_equal(ports.record.store(ports.record.ctx, frame, sizeof(frame)), 0);
	assert_int_equal(cf_device_init(&again, h.ctx.device_id, &ports), -EBADMSG);
	bad.n_undo_previous = CF_TAG_LIST_MAX + 1;
	cf_record_frame(&bad, frame);
	assert_int_equal(ports.record.store(ports.record.ctx, frame, sizeof(frame)), 0);
	assert_int_equal(cf_device_init(&again, h.ctx.device_id, &ports), -EBADMSG);
	cf_record_frame(&h.dev.state, frame);
	assert_int_equal(ports.record.store(ports.record.ctx, frame, sizeof(frame)), 0);
	assert_int_equal(cf_device_init(&again, h.ctx.device_id, &ports), 0);
}

static uint32_t crc32(const uint8_t *data, size_t len)
{
	uint32_t crc = 0xffffffffu;
	for (size_t i = 0; i < len; i++) {
		crc ^= data[i];
		for (int bit = 0; bit < 8; bit++) {
			crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
		}
	}
	return ~crc;
}

static void put32(uint8_t *out, uint32_t value)
{
	for (int i = 0; i < 4; i++) {
		out[i] = (uint8_t)(value >> (8 * i));
	}
}

/*
 * A record of format 1 (before the identity; 880 bytes of state, as this library wrote
 * it until issue 14) still loads after the update: the same state, no identity.
 */
static void test_format_1_record_loads_without_identity(void **state)
{
	(void)state;
	enum { V1_SIZE = 880, V1_LEN = 876 };
	uint8_t frame[8 + V1_SIZE + 4] = {0};
	struct cf_device_ports ports = fake_ports(&h.world);
	static struct cf_device again;

	stage_healthy(); /* a record with a stage, an undo record and a probe in it */
	assert_int_equal(offsetof(struct cf_state, identity_tag), V1_LEN);
	put32(frame, 0x43465231u);
	put32(frame + 4, 1u << 16 | V1_SIZE);
	memcpy(frame + 8, &h.dev.state, V1_LEN);
	put32(frame + 8 + V1_SIZE, crc32(frame, 8 + V1_SIZE));
	assert_int_equal(ports.record.store(ports.record.ctx, frame, sizeof(frame)), 0);
	assert_int_equal(cf_device_init(&again, h.ctx.device_id, &ports), 0);
	assert_memory_equal(&again.state, &h.dev.state, V1_LEN);
	assert_false(again.state.has_identity);
	assert_false(again.state.stage_identity);
	assert_false(again.state.undo_identity);
	frame[8] ^= 1; /* and a format-1 record is checked like any other */
	assert_int_equal(ports.record.store(ports.record.ctx, frame, sizeof(frame)), 0);
	assert_int_equal(cf_device_init(&again, h.ctx.device_id, &ports), -EBADMSG);
}

/* Over TLS a retire's list is proven on the broker before the retired tags go. */
static void test_tls_retire_proven_then_deletes(void **state)
{
	(void)state;
	commit();
	assert_int_equal(harness_send(&h, "s-retire"), 0);
	assert_int_equal(fake_last_report(&h.world)->phase, CF_PHASE_RETIRED);
	assert_int_equal(fake_last_report(&h.world)->op, CF_OP_RETIRE);
	assert_string_equal(fake_last_report(&h.world)->rollout_id, "r-1");
	assert_int_equal(h.dev.state.n_active, 1);
	assert_int_equal(h.dev.state.active[0], SPARE_TAG);
	assert_false(fake_keystore_has(&h.world, ACTIVE_TAG, 0));
	harness_assert_trust_works(&h);
}

/* A retire whose list the broker refuses returns to the previous list, deleting nothing. */
static void test_tls_retire_refused_by_the_broker_falls_back(void **state)
{
	(void)state;
	commit();
	h.world.reconnect_result = -ECONNREFUSED;
	assert_int_equal(harness_send(&h, "s-retire"), 0);
	const struct cf_report *r = fake_last_report(&h.world);
	assert_int_equal(r->phase, CF_PHASE_FALLBACK);
	assert_int_equal(r->reason, CF_REASON_BROKER_UNREACHABLE);
	assert_int_equal(r->op, CF_OP_RETIRE);
	assert_int_equal(h.dev.state.n_active, 2);
	assert_true(fake_keystore_has(&h.world, ACTIVE_TAG, 0));
	assert_true(fake_keystore_has(&h.world, SPARE_TAG, 0));
	assert_int_equal(h.dev.state.retire_unproven, 0);
	harness_assert_trust_works(&h);
}

/* Under a delegation of its root, a worker's key stages, commits and rolls back. */
static void test_delegated_stage_commit_rollback(void **state)
{
	(void)state;
	expect_phase("s-dlg-stage", CF_PHASE_HEALTH_OK);
	expect_phase("s-dlg-commit", CF_PHASE_COMMITTED);
	assert_int_equal(h.dev.state.n_active, 2);
	assert_string_equal(fake_last_report(&h.world)->rollout_id, "r-1");
	expect_phase("s-dlg-rollback", CF_PHASE_ROLLED_BACK);
	assert_int_equal(h.dev.state.n_active, 1);
	assert_int_equal(h.dev.state.last_seq, h.ctx.last_seq + 3);
	harness_assert_trust_works(&h);
}

/* Checks 4 to 5d refuse a delegated bundle before its payload is read: nothing is named. */
static void test_delegation_refusals_name_no_bundle(void **state)
{
	(void)state;
	static const struct {
		const char *name;
		enum cf_reason reason;
	} cases[] = {
		{"online-key-no-delegation", CF_REASON_UNKNOWN_KEY},
		{"dlg-unknown-root", CF_REASON_UNKNOWN_KEY},
		{"dlg-no-root-kid", CF_REASON_UNKNOWN_KEY},
		{"dlg-root-signature-flipped", CF_REASON_BAD_SIGNATURE},
		{"dlg-signed-by-other-key", CF_REASON_BAD_SIGNATURE},
		{"dlg-not-bstr", CF_REASON_BAD_DELEGATION},
		{"dlg-641-bytes", CF_REASON_BAD_DELEGATION},
		{"dlg-untagged", CF_REASON_BAD_DELEGATION},
		{"dlg-nested", CF_REASON_BAD_DELEGATION},
		{"dlg-alg-es384", CF_REASON_UNSUPPORTED_ALGORITHM},
		{"dlg-version-2", CF_REASON_BAD_DELEGATION},
		{"dlg-kid-not-of-pub", CF_REASON_BAD_DELEGATION},
		{"dlg-ops-trust-signer", CF_REASON_BAD_DELEGATION},
		{"dlg-bundle-kid-other", CF_REASON_BAD_DELEGATION},
		{"dlg-expired", CF_REASON_DELEGATION_EXPIRED},
		{"dlg-nbf-skew-301", CF_REASON_DELEGATION_EXPIRED},
		{"dlg-bundle-signed-by-other-key", CF_REASON_BAD_SIGNATURE},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		expect_unverified(cases[i].name, cases[i].reason);
	}
	/* this device revoked nothing: the key the CONTEXT's device revoked is one it takes
	 * (a commit with nothing staged, refused by check 13, which names the bundle) */
	expect_rejected("dlg-revoked-kid", CF_REASON_NOTHING_STAGED);
}

/* Check 7a refuses what the delegation does not cover, naming the bundle; root ops never. */
static void test_out_of_scope_names_the_bundle(void **state)
{
	(void)state;
	const char *const names[] = {"dlg-scope-op",	 "dlg-scope-kind", "dlg-scope-kind-of-many",
				     "dlg-scope-rid",	 "dlg-scope-manual-rid", "dlg-trust-signer",
				     "dlg-revoke"};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		expect_rejected(names[i], CF_REASON_OUT_OF_SCOPE);
		assert_int_equal(fake_last_report(&h.world)->seq, h.ctx.last_seq + 1);
	}
	assert_int_equal(h.dev.state.n_signers, 1);
	assert_int_equal(h.dev.state.n_revoked, 0);
}

/* A revoke by kid: committed, kept across a reboot, and replaced by the next list. */
static void test_revoke_by_kid(void **state)
{
	(void)state;
	stage_healthy(); /* seq 11: the revoke leaves the stage and its undo record alone */
	struct cf_state before = h.dev.state;
	expect_phase("s-revoke-clear", CF_PHASE_COMMITTED); /* seq 12, kids [], before 0 */
	assert_int_equal(fake_last_report(&h.world)->op, CF_OP_REVOKE);
	before.last_seq = h.ctx.last_seq + 2;
	assert_memory_equal(&before, &h.dev.state, sizeof(before));

	fake_world_free(&h.world);
	harness_init(&h, false);
	expect_phase("s-revoke-online", CF_PHASE_COMMITTED); /* seq 11 */
	assert_int_equal(h.dev.state.n_revoked, 1);
	assert_int_equal(h.dev.state.revoked_before, 0);
	expect_unverified("s-dlg-stage-12", CF_REASON_DELEGATION_REVOKED);
	harness_reboot(&h);
	assert_int_equal(h.dev.state.n_revoked, 1);
	expect_unverified("s-dlg-stage-12", CF_REASON_DELEGATION_REVOKED);
	expect_phase("s-revoke-clear", CF_PHASE_COMMITTED); /* seq 12: the list replaced by [] */
	assert_int_equal(h.dev.state.n_revoked, 0);
	expect_phase("s-dlg-stage-13", CF_PHASE_HEALTH_OK);
	harness_assert_trust_works(&h);
}

/* A revoke by time refuses delegations issued before it; a later `before` 0 never lowers it. */
static void test_revoke_by_time_never_lowers(void **state)
{
	(void)state;
	expect_phase("s-revoke-before", CF_PHASE_COMMITTED); /* seq 11 */
	const uint64_t revoked_before = h.dev.state.revoked_before;
	assert_true(revoked_before > h.ctx.now - 3600);
	expect_unverified("s-dlg-stage-12", CF_REASON_DELEGATION_REVOKED);
	expect_phase("s-revoke-clear", CF_PHASE_COMMITTED); /* seq 12, before 0 */
	assert_int_equal(h.dev.state.revoked_before, revoked_before);
	expect_unverified("s-dlg-stage-13", CF_REASON_DELEGATION_REVOKED);
	expect_phase("s-dlg-later-stage-13", CF_PHASE_HEALTH_OK); /* issued at revoked_before */
	harness_assert_trust_works(&h);
}

/* A revoke's payload: at most 8 distinct 8-byte kids, and both keys (check 6). */
static void test_revoke_payload_refusals(void **state)
{
	(void)state;
	expect_rejected("revoke-kids-9", CF_REASON_BAD_PAYLOAD);
	expect_rejected("revoke-kid-7-bytes", CF_REASON_BAD_PAYLOAD);
	expect_rejected("revoke-kids-repeated", CF_REASON_BAD_PAYLOAD);
	expect_rejected("revoke-no-before", CF_REASON_BAD_PAYLOAD);
	expect_rejected("revoke-no-kids", CF_REASON_BAD_PAYLOAD);
	expect_phase("revoke-kids-8", CF_PHASE_COMMITTED);
	assert_int_equal(h.dev.state.n_revoked, CF_REVOKED_KIDS_MAX);
}

/*
 * A record of format 2 (before the revocations; as this library wrote it until issue 17)
 * still loads after the update: the same state, nothing revoked.
 */
static void test_format_2_record_loads_with_nothing_revoked(void **state)
{
	(void)state;
	const size_t len = offsetof(struct cf_state, n_revoked);
	const size_t size = (len + _Alignof(struct cf_state) - 1) / _Alignof(struct cf_state) *
			    _Alignof(struct cf_state);
	static uint8_t frame[CF_RECORD_FRAME_LEN];
	struct cf_device_ports ports = fake_ports(&h.world);
	static struct cf_device again;

	stage_healthy();
	memset(frame, 0, sizeof(frame));
	put32(frame, 0x43465231u);
	put32(frame + 4, 2u << 16 | (uint32_t)size);
	memcpy(frame + 8, &h.dev.state, len);
	put32(frame + 8 + size, crc32(frame, 8 + size));
	assert_int_equal(ports.record.store(ports.record.ctx, frame, 8 + size + 4), 0);
	assert_int_equal(cf_device_init(&again, h.ctx.device_id, &ports), 0);
	assert_memory_equal(&again.state, &h.dev.state, len);
	assert_int_equal(again.state.n_revoked, 0);
	assert_int_equal(again.state.revoked_before, 0);
	/* a format-3 record with a revoked count past its array is refused */
	struct cf_state bad = h.dev.state;
	bad.n_revoked = CF_REVOKED_KIDS_MAX + 1;
	cf_record_frame(&bad, frame);
	assert_int_equal(ports.record.store(ports.record.ctx, frame, CF_RECORD_FRAME_LEN), 0);
	assert_int_equal(cf_device_init(&again, h.ctx.device_id, &ports), -EBADMSG);
}

#define PLAIN(test) cmocka_unit_test_setup_teardown(test, setup, teardown)
#define TLS(test) cmocka_unit_test_prestate_setup_teardown(test, setup, teardown, &h)

int main(void)
{
	const struct CMUnitTest tests[] = {
		PLAIN(test_stage_writes_the_spare_tag_and_probes_it),
		PLAIN(test_failed_probe_deletes_the_stage),
		PLAIN(test_modem_refusal_is_modem_error),
		PLAIN(test_stage_refusals),
		PLAIN(test_commit_installs_the_list),
		PLAIN(test_commit_refusals),
		PLAIN(test_fallback_at_commit_by),
		PLAIN(test_rollback_of_a_stage),
		PLAIN(test_rollback_of_a_commit),
		PLAIN(test_rollback_of_another_rollout_is_superseded),
		PLAIN(test_undo_by_makes_the_commit_permanent),
		PLAIN(test_v1_commit_keeps_its_record),
		PLAIN(test_retire),
		PLAIN(test_retire_refusals),
		PLAIN(test_trust_signer),
		PLAIN(test_trust_signer_swap_at_the_limit),
		PLAIN(test_retired_signer_is_unknown),
		PLAIN(test_unacknowledged_received_does_nothing),
		PLAIN(test_corrupt_record_is_refused),
		PLAIN(test_format_1_record_loads_without_identity),
		PLAIN(test_delegated_stage_commit_rollback),
		PLAIN(test_delegation_refusals_name_no_bundle),
		PLAIN(test_out_of_scope_names_the_bundle),
		PLAIN(test_revoke_by_kid),
		PLAIN(test_revoke_by_time_never_lowers),
		PLAIN(test_revoke_payload_refusals),
		PLAIN(test_format_2_record_loads_with_nothing_revoked),
		TLS(test_tls_commit_falls_back_when_the_broker_refuses),
		TLS(test_tls_commit_proven),
		TLS(test_tls_retire_proven_then_deletes),
		TLS(test_tls_retire_refused_by_the_broker_falls_back),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
