/*
 * Checks 1 to 12 of docs/protocol.md §4 on the bundles the Python encoder wrote
 * (tests/vectors/bundles, see make_bundles.py): each gives its MANIFEST reason; the
 * boundaries of every limit are cases there (the limit passes, one more is refused).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "certfleet/bundle.h"
#include "certfleet/cose.h"
#include "fixtures.h"

static struct fixture_context ctx;
static uint8_t buf[FIXTURE_MAX];

static struct cf_bundle_env env(void)
{
	return (struct cf_bundle_env){
		.device_id = ctx.device_id,
		.last_seq = ctx.last_seq,
		.now = ctx.now,
		.signers = ctx.keys,
		.n_signers = 1,
		.revoked = ctx.revoked,
		.n_revoked = ctx.n_revoked,
		.revoked_before = ctx.revoked_before,
	};
}

/* Every manifest case gives its reason, so every reason of checks 1 to 12 is met. */
static void test_every_case_gives_its_reason(void **state)
{
	(void)state;
	static struct fixture_case cases[256];
	size_t n = fixture_manifest(cases, 256);
	bool seen[CF_REASON_COUNT_] = {false};
	struct cf_bundle_env e = env();

	assert_true(n > 200);
	for (size_t i = 0; i < n; i++) {
		static struct cf_bundle bundle;
		size_t len = fixture_bundle(cases[i].name, buf, sizeof(buf));
		enum cf_reason reason = cf_bundle_open(buf, len, &e, &bundle);
		if (strcmp(cf_reason_str(reason), cases[i].reason) != 0) {
			fail_msg("%s: %s, expected %s (%s)", cases[i].name, cf_reason_str(reason),
				 cases[i].reason, bundle.detail);
		}
		seen[reason] = true;
	}
	for (enum cf_reason r = CF_REASON_OK; r <= CF_REASON_NOT_YET_VALID; r++) {
		if (!seen[r]) {
			fail_msg("no case gives %s", cf_reason_str(r));
		}
	}
	for (enum cf_reason r = CF_REASON_BAD_DELEGATION; r <= CF_REASON_OUT_OF_SCOPE; r++) {
		if (!seen[r]) {
			fail_msg("no case gives %s", cf_reason_str(r));
		}
	}
}

/* A rejection before the signature verified names no bundle; after, it names it. */
static void test_rejection_names_the_bundle_only_once_verified(void **state)
{
	(void)state;
	static struct cf_bundle bundle;
	struct cf_bundle_env e = env();
	size_t len = fixture_bundle("sig-other-key", buf, sizeof(buf));

	assert_int_equal(cf_bundle_open(buf, len, &e, &bundle), CF_REASON_BAD_SIGNATURE);
	assert_false(bundle.verified);
	assert_false(bundle.ids_known);
	len = fixture_bundle("wrong-device", buf, sizeof(buf));
	assert_int_equal(cf_bundle_open(buf, len, &e, &bundle), CF_REASON_WRONG_DEVICE);
	assert_true(bundle.ids_known);
	assert_int_equal(bundle.p.Bundle_payload_seq, ctx.last_seq + 1);
	assert_int_equal(bundle.op, CF_OP_COMMIT);
	assert_int_equal(bundle.p.Bundle_payload_rid.len, 3);
}

/* A signed payload the schema refuses still names its rid, seq and op, read best effort. */
static void test_refused_payload_names_the_bundle(void **state)
{
	(void)state;
	static struct cf_bundle bundle;
	struct cf_bundle_env e = env();
	const char *const named[] = {"payload-unknown-key", "payload-rid-65", "payload-creds-5",
				     "payload-unknown-op", "payload-active-8"};

	for (size_t i = 0; i < sizeof(named) / sizeof(named[0]); i++) {
		size_t len = fixture_bundle(named[i], buf, sizeof(buf));
		assert_int_equal(cf_bundle_open(buf, len, &e, &bundle), CF_REASON_BAD_PAYLOAD);
		assert_true(bundle.ids_known);
		assert_int_equal(bundle.p.Bundle_payload_seq, ctx.last_seq + 1);
		assert_true(bundle.p.Bundle_payload_rid.len == 3 || bundle.p.Bundle_payload_rid.len == CF_RID_MAX_BYTES + 1);
		assert_non_null(bundle.p.Bundle_payload_op.value);
	}
	size_t len = fixture_bundle("payload-unknown-op", buf, sizeof(buf));
	cf_bundle_open(buf, len, &e, &bundle);
	assert_int_equal(bundle.p.Bundle_payload_op.len, 6);
	assert_memory_equal(bundle.p.Bundle_payload_op.value, "reboot", 6);
	len = fixture_bundle("payload-not-a-map", buf, sizeof(buf));
	assert_int_equal(cf_bundle_open(buf, len, &e, &bundle), CF_REASON_BAD_PAYLOAD);
	assert_false(bundle.ids_known);
	len = fixture_bundle("payload-seq-text", buf, sizeof(buf));
	assert_int_equal(cf_bundle_open(buf, len, &e, &bundle), CF_REASON_BAD_PAYLOAD);
	assert_false(bundle.ids_known); /* a seq of the wrong kind: nothing is named */
}

/* Every byte flip of a valid bundle is refused (or still the same valid bundle). */
static void test_any_single_byte_flip_is_refused(void **state)
{
	(void)state;
	static struct cf_bundle bundle;
	struct cf_bundle_env e = env();
	size_t len = fixture_bundle("ok-commit", buf, sizeof(buf));

	assert_int_equal(cf_bundle_open(buf, len, &e, &bundle), CF_REASON_OK);
	for (size_t i = 0; i < len; i++) {
		buf[i] ^= 0x01;
		assert_int_not_equal(cf_bundle_open(buf, len, &e, &bundle), CF_REASON_OK);
		buf[i] ^= 0x01;
	}
}

/* A delegated bundle: refused up to 5d it names nothing, out of scope (7a) it names itself. */
static void test_delegated_rejections_name_the_bundle_only_in_scope(void **state)
{
	(void)state;
	static struct cf_bundle bundle;
	struct cf_bundle_env e = env();
	const char *const unverified[] = {"dlg-not-bstr", "dlg-unknown-root", "dlg-root-signature-flipped",
					  "dlg-version-2", "dlg-revoked-kid", "dlg-expired",
					  "dlg-bundle-signed-by-other-key"};

	for (size_t i = 0; i < sizeof(unverified) / sizeof(unverified[0]); i++) {
		size_t len = fixture_bundle(unverified[i], buf, sizeof(buf));
		assert_int_not_equal(cf_bundle_open(buf, len, &e, &bundle), CF_REASON_OK);
		assert_true(bundle.delegated);
		assert_false(bundle.verified);
		assert_false(bundle.ids_known);
	}
	size_t len = fixture_bundle("dlg-scope-rid", buf, sizeof(buf));
	assert_int_equal(cf_bundle_open(buf, len, &e, &bundle), CF_REASON_OUT_OF_SCOPE);
	assert_true(bundle.verified);
	assert_true(bundle.ids_known);
	assert_int_equal(bundle.op, CF_OP_COMMIT);
	assert_int_equal(bundle.p.Bundle_payload_seq, ctx.last_seq + 1);
	len = fixture_bundle("ok-commit", buf, sizeof(buf));
	assert_int_equal(cf_bundle_open(buf, len, &e, &bundle), CF_REASON_OK);
	assert_false(bundle.delegated);
}

/* Every byte flip of a delegated bundle, its delegation included, is refused. */
static void test_any_byte_flip_of_a_delegated_bundle_is_refused(void **state)
{
	(void)state;
	static struct cf_bundle bundle;
	struct cf_bundle_env e = env();
	size_t len = fixture_bundle("dlg-ok-commit", buf, sizeof(buf));

	assert_int_equal(cf_bundle_open(buf, len, &e, &bundle), CF_REASON_OK);
	assert_true(bundle.delegated);
	for (size_t i = 0; i < len; i++) {
		buf[i] ^= 0x01;
		assert_int_not_equal(cf_bundle_open(buf, len, &e, &bundle), CF_REASON_OK);
		buf[i] ^= 0x01;
	}
}

/* The revocation bounds: 8 kids listed, the last one refused; revoked_before + 1 refuses
 * a delegation issued at it. */
static void test_revocation_of_the_env(void **state)
{
	(void)state;
	static struct cf_bundle bundle;
	struct cf_bundle_env e = env();
	uint8_t revoked[CF_REVOKED_KIDS_MAX][CF_KID_LEN] = {{0}};
	size_t len = fixture_bundle("dlg-issued-at-revoked-before", buf, sizeof(buf));

	assert_int_equal(cf_bundle_open(buf, len, &e, &bundle), CF_REASON_OK);
	e.revoked_before++;
	assert_int_equal(cf_bundle_open(buf, len, &e, &bundle), CF_REASON_DELEGATION_REVOKED);
	e = env();
	len = fixture_bundle("dlg-ok-commit", buf, sizeof(buf));
	assert_int_equal(cf_bundle_open(buf, len, &e, &bundle), CF_REASON_OK);
	/* the bundle's kid is the delegated key's */
	struct cf_cose_sign1 msg;
	assert_int_equal(cf_cose_decode(buf, len, &msg), 0);
	assert_int_equal(msg.kid_len, CF_KID_LEN);
	for (size_t i = 0; i + 1 < CF_REVOKED_KIDS_MAX; i++) {
		memset(revoked[i], (int)i + 1, CF_KID_LEN);
	}
	memcpy(revoked[CF_REVOKED_KIDS_MAX - 1], msg.kid, CF_KID_LEN);
	e.revoked = revoked;
	e.n_revoked = CF_REVOKED_KIDS_MAX - 1;
	assert_int_equal(cf_bundle_open(buf, len, &e, &bundle), CF_REASON_OK);
	e.n_revoked = CF_REVOKED_KIDS_MAX;
	assert_int_equal(cf_bundle_open(buf, len, &e, &bundle), CF_REASON_DELEGATION_REVOKED);
}

/* Without a trusted signer nothing verifies. */
static void test_no_trusted_signer_is_unknown_key(void **state)
{
	(void)state;
	static struct cf_bundle bundle;
	struct cf_bundle_env e = env();
	size_t len = fixture_bundle("ok-commit", buf, sizeof(buf));

	e.signers = &ctx.keys[5];
	assert_int_equal(cf_bundle_open(buf, len, &e, &bundle), CF_REASON_UNKNOWN_KEY);
}

static int setup(void **state)
{
	(void)state;
	fixture_context(&ctx);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_case_gives_its_reason),
		cmocka_unit_test(test_rejection_names_the_bundle_only_once_verified),
		cmocka_unit_test(test_refused_payload_names_the_bundle),
		cmocka_unit_test(test_any_single_byte_flip_is_refused),
		cmocka_unit_test(test_no_trusted_signer_is_unknown_key),
		cmocka_unit_test(test_delegated_rejections_name_the_bundle_only_in_scope),
		cmocka_unit_test(test_any_byte_flip_of_a_delegated_bundle_is_refused),
		cmocka_unit_test(test_revocation_of_the_env),
	};
	return cmocka_run_group_tests(tests, setup, NULL);
}
