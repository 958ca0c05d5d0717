/*
 * A power cut before any port call of every op, then a reboot from the persisted
 * record and the key store, itself cut before each of its steps in turn: the device
 * always ends with a working trust set (1 to 7 active tags, each holding a CA chain,
 * no delete left pending), and a stage cut before its probe passed leaves nothing in
 * the spare tag.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "device_harness.h"

static struct harness h;

/* Each scenario: bundles handed in order ("tick" fires the commit deadline). */
static const char *const scenarios[][5] = {
	{"s-stage", NULL},
	{"s-stage", "s-commit", NULL},
	{"s-stage", "s-commit", "s-rollback", NULL},
	{"s-stage", "s-rollback-after-stage", NULL},
	{"s-stage", "tick", NULL},
	{"s-stage", "s-commit", "s-retire", NULL},
	{"s-stage", "s-stage-44", NULL},
	{"s-stage-modem-refuses", NULL},
	{"s-ts-1", NULL},
};

/* Hand the scenario's bundles; with `tolerate`, a port failure is no test failure. */
static void run_steps(const char *const *steps, bool tolerate)
{
	for (size_t i = 0; steps[i] != NULL; i++) {
		int err;
		if (strcmp(steps[i], "tick") == 0) {
			h.world.now = h.dev.state.commit_by;
			err = cf_device_tick(&h.dev);
		} else {
			err = harness_send(&h, steps[i]);
		}
		if (!tolerate) {
			assert_int_equal(err, 0);
		}
	}
}

static void run(const char *const *steps)
{
	run_steps(steps, false);
}

static bool spare_lingers(void)
{
	const struct cf_state *st = &h.dev.state;
	bool spare_active = false;
	for (size_t i = 0; i < st->n_active; i++) {
		spare_active |= st->active[i] == SPARE_TAG;
	}
	return st->stage_phase != CF_STAGE_HEALTHY && !spare_active &&
	       fake_keystore_has(&h.world, SPARE_TAG, 0);
}

/*
 * Reboot after a cut, cutting power again before each step of the recovery in turn:
 * recovery must itself survive a power cut and end the same way.
 */
static void reboot_through_cuts(size_t scenario, int first_cut)
{
	for (int again = 1;; again++) {
		jmp_buf power_cut;
		h.world.power_cut = &power_cut;
		h.world.steps = 0;
		h.world.cut_at = again;
		if (setjmp(power_cut) == 0) {
			harness_reboot(&h);
			h.world.cut_at = 0;
			return; /* the recovery ended before step `again` */
		}
		if (again >= 50) {
			fail_msg("scenario %zu, cut at %d: recovery never ends", scenario, first_cut);
		}
	}
}

static void cut_everywhere(bool tls_broker)
{
	for (size_t s = 0; s < sizeof(scenarios) / sizeof(scenarios[0]); s++) {
		int completed = 0;
		for (int cut = 1; !completed; cut++) {
			jmp_buf power_cut;
			harness_init(&h, tls_broker);
			h.world.power_cut = &power_cut;
			h.world.steps = 0;
			h.world.cut_at = cut;
			if (setjmp(power_cut) == 0) {
				run(scenarios[s]);
				completed = 1; /* the run ended before step `cut`: all cuts done */
			}
			reboot_through_cuts(s, cut);
			harness_assert_trust_works(&h);
			if (spare_lingers()) { /* no healthy stage, 43 not active, yet an item */
				fail_msg("scenario %zu, cut at %d: sec_tag 43 kept an item", s, cut);
			}
			fake_world_free(&h.world);
			assert_true(cut < 100);
		}
	}
}

/*
 * A port call that fails (-EIO) at any step of any op: the device takes its record back
 * and finishes or undoes from it at once, without a reboot, and still trusts its server.
 */
static void test_port_failure_at_every_step(void **state)
{
	(void)state;
	for (size_t s = 0; s < sizeof(scenarios) / sizeof(scenarios[0]); s++) {
		for (int fail = 1;; fail++) {
			harness_init(&h, false);
			h.world.steps = 0;
			h.world.fail_at = fail;
			run_steps(scenarios[s], true);
			bool reached = h.world.steps >= fail;
			h.world.fail_at = 0;
			harness_assert_trust_works(&h);
			if (spare_lingers()) {
				fail_msg("scenario %zu, failure at %d: sec_tag 43 kept an item", s, fail);
			}
			fake_world_free(&h.world);
			if (!reached) {
				break; /* the scenario ended before step `fail`: every step was tried */
			}
			assert_true(fail < 100);
		}
	}
}

/* A stage cut after its items were written, before its probe, is probed after the reboot. */
static void test_written_stage_is_probed_after_a_reboot(void **state)
{
	(void)state;
	static struct cf_device peek;
	int written_cuts = 0;

	for (int cut = 1; cut < 20; cut++) {
		jmp_buf power_cut;
		harness_init(&h, false);
		h.world.power_cut = &power_cut;
		h.world.steps = 0;
		h.world.cut_at = cut;
		bool cut_happened = setjmp(power_cut) != 0;
		if (!cut_happened) {
			run(scenarios[0]); /* s-stage */
		}
		h.world.cut_at = 0;
		struct cf_device_ports ports = fake_ports(&h.world);
		assert_int_equal(cf_device_init(&peek, h.ctx.device_id, &ports), 0);
		if (cut_happened && peek.state.stage_phase == CF_STAGE_WRITTEN) {
			written_cuts++;
			size_t before = h.world.n_reports;
			harness_reboot(&h);
			assert_int_equal(h.world.n_reports, before + 2);
			assert_int_equal(h.world.reports[before].phase, CF_PHASE_STAGED);
			assert_int_equal(h.world.reports[before + 1].phase, CF_PHASE_HEALTH_OK);
			assert_int_equal(h.world.reports[before + 1].seq, h.ctx.last_seq + 1);
			assert_int_equal(h.world.reports[before + 1].op, CF_OP_STAGE);
			assert_string_equal(h.world.reports[before + 1].rollout_id, "r-1");
			assert_int_equal(h.dev.state.stage_phase, CF_STAGE_HEALTHY);
			assert_true(fake_keystore_has(&h.world, SPARE_TAG, 0));
		}
		fake_world_free(&h.world);
		if (!cut_happened) {
			break;
		}
	}
	assert_true(written_cuts >= 1);
}

/* A cut before any port call of any op ends, after a reboot, with a working trust set. */
static void test_power_cut_at_every_step(void **state)
{
	(void)state;
	cut_everywhere(false);
}

/* The same over a TLS broker, where a commit is proven on the broker after a reboot. */
static void test_power_cut_at_every_step_over_tls(void **state)
{
	(void)state;
	cut_everywhere(true);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_power_cut_at_every_step),
		cmocka_unit_test(test_power_cut_at_every_step_over_tls),
		cmocka_unit_test(test_port_failure_at_every_step),
		cmocka_unit_test(test_written_stage_is_probed_after_a_reboot),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
