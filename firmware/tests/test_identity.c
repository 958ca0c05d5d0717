/*
 * Identity rotation (issue 14) on the state machine: keygen, the certificate's stage
 * and its mutual-TLS probe, the identity commit proven on the broker (or the fallback to
 * the old identity), rollback of each record, retire of the old identity, commit_by
 * after a keygen, and every check 13 gives for them. The device starts with its factory
 * identity in sec_tag 45; the keygen makes tests/vectors/bundles/identity-key.pem's key
 * in 44, which the i-stage certificate certifies.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "device_harness.h"

static struct harness h;

static void expect_phases(size_t from, const enum cf_phase *phases, size_t n)
{
	assert_int_equal(h.world.n_reports - from, n);
	for (size_t i = 0; i < n; i++) {
		if (h.world.reports[from + i].phase != phases[i]) {
			fail_msg("report %zu: %s, expected %s", i,
				 cf_phase_str(h.world.reports[from + i].phase), cf_phase_str(phases[i]));
		}
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
	assert_memory_equal(&before, &h.dev.state, sizeof(before));
	harness_assert_trust_works(&h);
}

static void send_ok(const char *name, enum cf_phase last)
{
	assert_int_equal(harness_send(&h, name), 0);
	const struct cf_report *r = fake_last_report(&h.world);
	if (r->phase != last) {
		fail_msg("%s: %s (%s), expected %s", name, cf_phase_str(r->phase),
			 cf_reason_str(r->reason), cf_phase_str(last));
	}
	harness_assert_trust_works(&h);
}

static bool holds_identity(uint32_t tag)
{
	return fake_keystore_has(&h.world, tag, 1) && fake_keystore_has(&h.world, tag, 2);
}

static bool empty(uint32_t tag)
{
	for (uint8_t type = 0; type <= CF_CRED_TYPE_MAX; type++) {
		if (fake_keystore_has(&h.world, tag, type)) {
			return false;
		}
	}
	return true;
}

static void committed(void)
{
	send_ok("i-keygen", CF_PHASE_CSR);
	send_ok("i-stage", CF_PHASE_HEALTH_OK);
	send_ok("i-commit", CF_PHASE_COMMITTED);
}

static int setup(void **state)
{
	harness_init(&h, *state != NULL);
	harness_provision_identity(&h);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	fake_world_free(&h.world);
	return 0;
}

/* A keygen reports received, then csr with the %KEYGEN answer; the key is in the tag. */
static void test_keygen_reports_the_csr(void **state)
{
	(void)state;
	const enum cf_phase phases[] = {CF_PHASE_RECEIVED, CF_PHASE_CSR};
	fake_keystore_put(&h.world, IDENTITY_TAG, 0, h.factory_ca); /* a leftover: deleted */
	send_ok("i-keygen", CF_PHASE_CSR);
	expect_phases(0, phases, 2);
	const struct cf_report *r = fake_last_report(&h.world);
	assert_int_equal(r->op, CF_OP_KEYGEN);
	assert_int_equal(r->reason, CF_REASON_OK);
	assert_int_equal(r->seq, h.ctx.last_seq + 1);
	assert_non_null(r->csr);
	assert_non_null(strchr(r->csr, '.'));
	assert_null(h.world.reports[0].csr); /* only the csr report carries it */
	assert_true(fake_keystore_has(&h.world, IDENTITY_TAG, 2));
	assert_false(fake_keystore_has(&h.world, IDENTITY_TAG, 0));
	assert_false(fake_keystore_has(&h.world, IDENTITY_TAG, 1));
	assert_int_equal(h.dev.state.stage_phase, CF_STAGE_KEYGEN);
	assert_int_equal(h.dev.state.undo_kind, CF_UNDO_STAGE);
	assert_true(h.dev.state.undo_identity);
	assert_int_equal(h.dev.state.identity_tag, OLD_IDENTITY_TAG); /* unchanged */
}

/* A keygen never into an active tag or the identity in use. */
static void test_keygen_refusals(void **state)
{
	(void)state;
	expect_rejected("i-keygen-into-active", CF_REASON_TAG_IN_USE);
	expect_rejected("i-keygen-into-identity", CF_REASON_TAG_IN_USE);
	assert_true(holds_identity(OLD_IDENTITY_TAG));
}

/* The modem refusing %KEYGEN: rejected with modem_error after received, nothing kept. */
static void test_keygen_modem_refusal(void **state)
{
	(void)state;
	const enum cf_phase phases[] = {CF_PHASE_RECEIVED, CF_PHASE_REJECTED};
	h.world.keygen_refused = EALREADY;
	assert_int_equal(harness_send(&h, "i-keygen"), 0);
	expect_phases(0, phases, 2);
	assert_int_equal(fake_last_report(&h.world)->reason, CF_REASON_MODEM_ERROR);
	assert_true(empty(IDENTITY_TAG));
	assert_int_equal(h.dev.state.undo_kind, CF_UNDO_NONE);
	assert_int_equal(h.dev.state.stage_phase, CF_STAGE_NONE);
	harness_assert_trust_works(&h);
}

/* The certificate's stage: received, staged, then health_ok from the mutual-TLS probe. */
static void test_identity_stage_probes_with_the_new_identity(void **state)
{
	(void)state;
	const enum cf_phase phases[] = {CF_PHASE_RECEIVED, CF_PHASE_STAGED, CF_PHASE_HEALTH_OK};
	send_ok("i-keygen", CF_PHASE_CSR);
	size_t from = h.world.n_reports;
	send_ok("i-stage", CF_PHASE_HEALTH_OK);
	expect_phases(from, phases, 3);
	assert_int_equal(fake_last_report(&h.world)->op, CF_OP_STAGE);
	assert_true(holds_identity(IDENTITY_TAG));
	assert_int_equal(h.dev.state.stage_phase, CF_STAGE_HEALTHY);
	assert_int_equal(h.dev.state.identity_tag, OLD_IDENTITY_TAG);
}

/* No keygen record of this rollout and tag: nothing_staged; another key: key_mismatch. */
static void test_identity_stage_refusals(void **state)
{
	(void)state;
	expect_rejected("i-stage", CF_REASON_NOTHING_STAGED); /* no keygen yet */
	send_ok("i-keygen", CF_PHASE_CSR);
	expect_rejected("i-stage-other-rollout", CF_REASON_NOTHING_STAGED);
	expect_rejected("i-stage-other-tag", CF_REASON_NOTHING_STAGED);
	expect_rejected("i-stage-into-identity", CF_REASON_TAG_IN_USE);
	expect_rejected("i-stage-foreign-key", CF_REASON_KEY_MISMATCH);
	send_ok("i-stage", CF_PHASE_HEALTH_OK); /* the record is still there */
}

/* A server refusing the staged certificate: health_failed identity_refused, tag emptied. */
static void test_identity_refused_by_the_probe(void **state)
{
	(void)state;
	h.world.identity_refused = true;
	send_ok("i-keygen", CF_PHASE_CSR);
	send_ok("i-stage", CF_PHASE_HEALTH_FAILED);
	assert_int_equal(fake_last_report(&h.world)->reason, CF_REASON_IDENTITY_REFUSED);
	assert_true(empty(IDENTITY_TAG));
	assert_int_equal(h.dev.state.undo_kind, CF_UNDO_NONE);
	assert_int_equal(h.dev.state.identity_tag, OLD_IDENTITY_TAG);
	expect_rejected("i-commit", CF_REASON_NOTHING_STAGED);
}

/* The commit switches the identity once the broker accepted it (TLS), keeping the old. */
static void test_commit_switches_the_identity(void **state)
{
	(void)state;
	committed();
	assert_true(h.dev.state.has_identity);
	assert_int_equal(h.dev.state.identity_tag, IDENTITY_TAG);
	assert_int_equal(h.dev.state.undo_kind, CF_UNDO_COMMIT);
	assert_true(h.dev.state.undo_identity);
	assert_int_equal(h.dev.state.n_active, 1); /* the active list is unchanged */
	assert_true(holds_identity(OLD_IDENTITY_TAG)); /* retired later, by its own bundle */
	if (h.world.tls_broker) {
		assert_non_null(h.world.last_identity);
		assert_int_equal(h.world.last_identity_tag, IDENTITY_TAG);
	}
}

/* A broker that refuses the new identity: back to the old one, fallback broker_unreachable. */
static void test_commit_falls_back_when_the_broker_refuses(void **state)
{
	(void)state;
	h.world.broker_refuses = IDENTITY_TAG;
	send_ok("i-keygen", CF_PHASE_CSR);
	send_ok("i-stage", CF_PHASE_HEALTH_OK);
	send_ok("i-commit", CF_PHASE_FALLBACK);
	assert_int_equal(fake_last_report(&h.world)->reason, CF_REASON_BROKER_UNREACHABLE);
	assert_int_equal(h.dev.state.identity_tag, OLD_IDENTITY_TAG);
	assert_int_equal(h.world.last_identity_tag, OLD_IDENTITY_TAG); /* reconnected with it */
	assert_true(empty(IDENTITY_TAG));
	assert_int_equal(h.dev.state.undo_kind, CF_UNDO_NONE);
}

/* A rollback undoes each identity record: the keygen's, the stage's, the commit's. */
static void test_rollback_of_each_identity_record(void **state)
{
	(void)state;
	const char *const before[][3] = {
		{"i-keygen", NULL},
		{"i-keygen", "i-stage", NULL},
		{"i-keygen", "i-stage", "i-commit"},
	};
	for (size_t k = 0; k < 3; k++) {
		if (k > 0) {
			teardown(NULL);
			setup(state);
		}
		for (size_t i = 0; i < 3 && before[k][i] != NULL; i++) {
			assert_int_equal(harness_send(&h, before[k][i]), 0);
		}
		send_ok("i-rollback", CF_PHASE_ROLLED_BACK);
		assert_int_equal(h.dev.state.identity_tag, OLD_IDENTITY_TAG);
		assert_true(holds_identity(OLD_IDENTITY_TAG));
		assert_true(empty(IDENTITY_TAG));
		assert_int_equal(h.dev.state.undo_kind, CF_UNDO_NONE);
		if (k == 2 && h.world.tls_broker) {
			assert_int_equal(h.world.last_identity_tag, OLD_IDENTITY_TAG);
		}
	}
}

/* Undoing an identity commit whose previous identity lost its key: unsafe_active. */
static void test_rollback_needs_the_previous_identity(void **state)
{
	(void)state;
	committed();
	struct cf_keystore ks = cf_host_keystore_port(&h.world.keystore);
	ks.set_online(ks.ctx, false);
	assert_int_equal(ks.remove(ks.ctx, OLD_IDENTITY_TAG, 2), 0);
	ks.set_online(ks.ctx, true);
	expect_rejected("i-rollback", CF_REASON_UNSAFE_ACTIVE);
}

/* The old identity is retired by a later bundle; the one in use never is. */
static void test_retire_of_the_old_identity(void **state)
{
	(void)state;
	expect_rejected("i-retire-old", CF_REASON_TAG_IN_USE); /* 45 is still in use */
	committed();
	expect_rejected("i-retire-identity", CF_REASON_TAG_IN_USE);
	expect_rejected("i-stage-trust-into-identity", CF_REASON_TAG_IN_USE);
	send_ok("i-retire-old", CF_PHASE_RETIRED);
	assert_true(empty(OLD_IDENTITY_TAG));
	assert_true(holds_identity(IDENTITY_TAG));
	assert_int_equal(h.dev.state.identity_tag, IDENTITY_TAG);
	assert_int_equal(h.dev.state.undo_kind, CF_UNDO_NONE); /* the retire ended the record */
}

/* No certificate before commit_by after a keygen: the key goes, fallback commit_timeout. */
static void test_commit_timeout_after_keygen(void **state)
{
	(void)state;
	send_ok("i-keygen", CF_PHASE_CSR);
	h.world.now = h.dev.state.commit_by - 1;
	assert_int_equal(cf_device_tick(&h.dev), 0);
	assert_int_equal(fake_last_report(&h.world)->phase, CF_PHASE_CSR);
	h.world.now = h.dev.state.commit_by;
	assert_int_equal(cf_device_tick(&h.dev), 0);
	const struct cf_report *r = fake_last_report(&h.world);
	assert_int_equal(r->phase, CF_PHASE_FALLBACK);
	assert_int_equal(r->reason, CF_REASON_COMMIT_TIMEOUT);
	assert_int_equal(r->op, CF_OP_KEYGEN);
	assert_int_equal(r->seq, h.ctx.last_seq + 1);
	assert_true(empty(IDENTITY_TAG));
	assert_int_equal(h.dev.state.undo_kind, CF_UNDO_NONE);
	harness_assert_trust_works(&h);
}

/* No commit before commit_by after the identity stage: fallback commit_timeout too. */
static void test_commit_timeout_after_identity_stage(void **state)
{
	(void)state;
	send_ok("i-keygen", CF_PHASE_CSR);
	send_ok("i-stage", CF_PHASE_HEALTH_OK);
	h.world.now = h.dev.state.commit_by;
	assert_int_equal(cf_device_tick(&h.dev), 0);
	const struct cf_report *r = fake_last_report(&h.world);
	assert_int_equal(r->phase, CF_PHASE_FALLBACK);
	assert_int_equal(r->reason, CF_REASON_COMMIT_TIMEOUT);
	assert_int_equal(r->op, CF_OP_STAGE);
	assert_true(empty(IDENTITY_TAG));
	assert_int_equal(h.dev.state.identity_tag, OLD_IDENTITY_TAG);
}

/* A device without an identity gets one: the commit presents it, a rollback removes it. */
static void test_first_identity(void **state)
{
	teardown(NULL);
	harness_init(&h, *state != NULL);
	h.world.fixed_key = true;
	committed();
	assert_true(h.dev.state.has_identity);
	assert_int_equal(h.dev.state.identity_tag, IDENTITY_TAG);
	send_ok("i-rollback", CF_PHASE_ROLLED_BACK);
	assert_false(h.dev.state.has_identity);
	assert_true(empty(IDENTITY_TAG));
}

/* A record with an identity survives a reboot as it was. */
static void test_identity_survives_a_reboot(void **state)
{
	(void)state;
	committed();
	harness_reboot(&h);
	assert_true(h.dev.state.has_identity);
	assert_int_equal(h.dev.state.identity_tag, IDENTITY_TAG);
	assert_true(h.dev.state.undo_identity);
	harness_assert_trust_works(&h);
}

#define BOTH(test)                                                                                 \
	cmocka_unit_test_setup_teardown(test, setup, teardown),                                    \
		cmocka_unit_test_prestate_setup_teardown(test, setup, teardown, &tls)

int main(void)
{
	static int tls = 1;
	const struct CMUnitTest tests[] = {
		BOTH(test_keygen_reports_the_csr),
		BOTH(test_keygen_refusals),
		BOTH(test_keygen_modem_refusal),
		BOTH(test_identity_stage_probes_with_the_new_identity),
		BOTH(test_identity_stage_refusals),
		BOTH(test_identity_refused_by_the_probe),
		BOTH(test_commit_switches_the_identity),
		cmocka_unit_test_prestate_setup_teardown(test_commit_falls_back_when_the_broker_refuses,
							 setup, teardown, &tls),
		BOTH(test_rollback_of_each_identity_record),
		BOTH(test_rollback_needs_the_previous_identity),
		BOTH(test_retire_of_the_old_identity),
		BOTH(test_commit_timeout_after_keygen),
		BOTH(test_commit_timeout_after_identity_stage),
		BOTH(test_first_identity),
		BOTH(test_identity_survives_a_reboot),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
