/*
 * The JSON report and state messages: exact bytes for known values, RFC 3339 times,
 * escaping, a buffer too small at every length, and files the Python side checks
 * (check_messages.py parses each with the orchestrator's own message models).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "certfleet/message.h"
#include "device_harness.h"

static struct cf_report sample(void)
{
	struct cf_report r = {
		.version = 2,
		.rollout_id = "r-7",
		.seq = 18,
		.op = CF_OP_STAGE,
		.phase = CF_PHASE_HEALTH_FAILED,
		.reason = CF_REASON_UNKNOWN_CA,
		.detail = "no CA",
		.time = 1800000000,
		.active_tags = {42},
		.n_active = 1,
	};
	return r;
}

/* A report is the JSON object of docs/protocol.md §7, key for key. */
static void test_report_exact_bytes(void **state)
{
	(void)state;
	char buf[CF_REPORT_JSON_MAX];
	size_t len = 0;
	struct cf_report r = sample();
	const char *expected =
		"{\"v\":2,\"device_id\":\"nrf-1\",\"rollout_id\":\"r-7\",\"seq\":18,\"op\":\"stage\","
		"\"phase\":\"health_failed\",\"reason\":\"unknown_ca\",\"detail\":\"no CA\","
		"\"time\":\"2027-01-15T08:00:00Z\",\"active_tags\":[42]}";

	assert_int_equal(cf_report_json(&r, "nrf-1", buf, sizeof(buf), &len), 0);
	assert_int_equal(len, strlen(expected));
	assert_memory_equal(buf, expected, len);
	r.op = CF_OP_NONE; /* a report that names no bundle has no op */
	assert_int_equal(cf_report_json(&r, "nrf-1", buf, sizeof(buf), &len), 0);
	buf[len] = '\0';
	assert_null(strstr(buf, "\"op\""));
}

/* Quotes, backslashes and control characters are escaped; UTF-8 passes as it is. */
static void test_report_escapes(void **state)
{
	(void)state;
	char buf[CF_REPORT_JSON_MAX];
	size_t len = 0;
	struct cf_report r = sample();

	strcpy(r.rollout_id, "a\"b\\c\n\xc3\xa9");
	assert_int_equal(cf_report_json(&r, "nrf-1", buf, sizeof(buf), &len), 0);
	buf[len] = '\0';
	assert_non_null(strstr(buf, "\"rollout_id\":\"a\\\"b\\\\c\\u000a\xc3\xa9\""));
}

/* Every buffer shorter than the message is refused, and nothing is written past it. */
static void test_short_buffers_are_refused(void **state)
{
	(void)state;
	char buf[CF_REPORT_JSON_MAX + 1];
	size_t full = 0, len = 0;
	struct cf_report r = sample();

	assert_int_equal(cf_report_json(&r, "nrf-1", buf, sizeof(buf), &full), 0);
	for (size_t cap = 0; cap < full; cap++) {
		memset(buf, 'x', sizeof(buf));
		assert_int_equal(cf_report_json(&r, "nrf-1", buf, cap, &len), -ENOSPC);
		assert_int_equal(buf[cap], 'x');
	}
}

/* The worst-case report fits CF_REPORT_JSON_MAX. */
static void test_worst_case_report_fits(void **state)
{
	(void)state;
	char buf[CF_REPORT_JSON_MAX];
	char id[CF_DEVICE_ID_MAX + 1];
	size_t len = 0;
	struct cf_report r = sample();

	memset(id, 'd', CF_DEVICE_ID_MAX);
	id[CF_DEVICE_ID_MAX] = '\0';
	memset(r.rollout_id, '\x01', CF_RID_MAX_BYTES);
	memset(r.detail, '\x01', CF_REPORT_DETAIL_LEN);
	r.n_active = CF_TAG_LIST_MAX;
	for (size_t i = 0; i < CF_TAG_LIST_MAX; i++) {
		r.active_tags[i] = CF_SEC_TAG_MAX;
	}
	r.seq = UINT64_MAX;
	r.reason = CF_REASON_UNSUPPORTED_ALGORITHM;
	r.op = CF_OP_TRUST_SIGNER;
	assert_int_equal(cf_report_json(&r, id, buf, sizeof(buf), &len), 0);
	/* and with the longest `csr` field a keygen may report */
	static char csr[CF_CSR_FIELD_MAX_BYTES + 1];
	memset(csr, 'A', CF_CSR_FIELD_MAX_BYTES);
	csr[CF_CSR_FIELD_MAX_BYTES / 2] = '.';
	r.csr = csr;
	r.phase = CF_PHASE_CSR;
	assert_int_equal(cf_report_json(&r, id, buf, sizeof(buf), &len), 0);
}

/* A `csr` report carries the %KEYGEN answer in `csr`, after the other keys. */
static void test_csr_report_bytes(void **state)
{
	(void)state;
	char buf[CF_REPORT_JSON_MAX];
	size_t len = 0;
	struct cf_report r = sample();

	r.op = CF_OP_KEYGEN;
	r.phase = CF_PHASE_CSR;
	r.reason = CF_REASON_OK;
	r.detail[0] = '\0';
	r.csr = "MIIB.0oRD";
	assert_int_equal(cf_report_json(&r, "nrf-1", buf, sizeof(buf), &len), 0);
	buf[len] = '\0';
	assert_string_equal(buf, "{\"v\":2,\"device_id\":\"nrf-1\",\"rollout_id\":\"r-7\",\"seq\":18,"
				 "\"op\":\"keygen\",\"phase\":\"csr\",\"reason\":\"ok\",\"detail\":\"\","
				 "\"time\":\"2027-01-15T08:00:00Z\",\"active_tags\":[42],"
				 "\"csr\":\"MIIB.0oRD\"}");
}

/* Epoch seconds become RFC 3339 UTC, leap days and the last second of a year included. */
static void test_rfc3339(void **state)
{
	(void)state;
	char text[21];
	const struct {
		uint64_t epoch;
		const char *text;
	} cases[] = {
		{0, "1970-01-01T00:00:00Z"},	       {951782400, "2000-02-29T00:00:00Z"},
		{1800000000, "2027-01-15T08:00:00Z"}, {4102444799, "2099-12-31T23:59:59Z"},
		{1709251199, "2024-02-29T23:59:59Z"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cf_rfc3339(cases[i].epoch, text);
		assert_string_equal(text, cases[i].text);
	}
}

/* A state message lists each item with its digest and the active list. */
static void test_state_exact_bytes(void **state)
{
	(void)state;
	char buf[CF_STATE_JSON_MAX(1)];
	size_t len = 0;
	struct cf_state_item item = {.sec_tag = 42, .type = 0, .not_after = 1800000000};
	const uint32_t active[] = {42};

	memset(item.sha256, 0xab, sizeof(item.sha256));
	assert_int_equal(cf_state_json("nrf-1", 1800000000, &item, 1, active, 1, NULL, buf,
				       sizeof(buf), &len),
			 0);
	buf[len] = '\0';
	assert_string_equal(
		buf, "{\"v\":2,\"device_id\":\"nrf-1\",\"time\":\"2027-01-15T08:00:00Z\","
		     "\"credentials\":[{\"sec_tag\":42,\"type\":0,\"sha256\":"
		     "\"abababababababababababababababababababababababababababababababab\","
		     "\"not_after\":\"2027-01-15T08:00:00Z\"}],\"active_tags\":[42]}");
	/* a device with an identity names its tag */
	const uint32_t identity = 44;
	assert_int_equal(cf_state_json("nrf-1", 1800000000, &item, 1, active, 1, &identity, buf,
				       sizeof(buf), &len),
			 0);
	buf[len] = '\0';
	assert_non_null(strstr(buf, "\"active_tags\":[42],\"identity_tag\":44}"));
}

static void write_file(const char *name, const char *data, size_t len)
{
	char path[128];
	snprintf(path, sizeof(path), "messages/%s", name);
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	fclose(f);
}

/* The reports of a device's whole rollout, as files for check_messages.py. */
static void test_write_messages_for_the_python_check(void **state)
{
	(void)state;
	static struct harness h;
	/* a trust rollout, then (a fresh device) an identity rotation: keygen, stage, commit */
	static const char *const bundles[] = {"s-stage",	  "s-commit",	   "s-rollback",
					      "s-rollback-again", "sig-other-key", "s-ts-1",
					      NULL,		  "i-keygen",	   "i-stage",
					      "i-commit"};
	char buf[CF_REPORT_JSON_MAX], name[48];
	size_t len = 0, files = 0;

	mkdir("messages", 0755);
	harness_init(&h, false);
	for (size_t i = 0; i < sizeof(bundles) / sizeof(bundles[0]); i++) {
		if (bundles[i] != NULL) {
			assert_int_equal(harness_send(&h, bundles[i]), 0);
			continue;
		}
		for (size_t k = 0; k < h.world.n_reports; k++) {
			assert_int_equal(cf_report_json(&h.world.reports[k], h.ctx.device_id, buf,
							sizeof(buf), &len),
					 0);
			snprintf(name, sizeof(name), "report-%02zu.json", files++);
			write_file(name, buf, len);
		}
		fake_world_free(&h.world);
		harness_init(&h, false);
		h.world.fixed_key = true;
	}
	for (size_t i = 0; i < h.world.n_reports; i++) {
		assert_int_equal(cf_report_json(&h.world.reports[i], h.ctx.device_id, buf, sizeof(buf), &len), 0);
		snprintf(name, sizeof(name), "report-%02zu.json", files++);
		write_file(name, buf, len);
	}
	/* the key store as the host transport states it: client certificates with their pem */
	static struct cf_state_item items[8];
	static char pems[2][CF_CERT_ITEM_MAX_BYTES];
	static char state_buf[CF_STATE_JSON_MAX(8) + 2 * CF_STATE_PEM_JSON_MAX(CF_CERT_ITEM_MAX_BYTES)];
	size_t n = 0, n_pems = 0;
	assert_int_equal(cf_host_keystore_list(&h.world.keystore, items, 8, &n), 0);
	for (size_t i = 0; i < n; i++) {
		if (items[i].type == CF_CRED_TYPE_CLIENT_CERT) {
			assert_true(n_pems < 2);
			assert_int_equal(cf_host_keystore_read(&h.world.keystore, items[i].sec_tag, 1,
							       (uint8_t *)pems[n_pems], sizeof(pems[0]),
							       &items[i].pem_len),
					 0);
			items[i].pem = pems[n_pems++];
		}
	}
	assert_int_equal(n_pems, 1); /* the new identity's certificate */
	assert_true(h.dev.state.has_identity);
	assert_int_equal(cf_state_json(h.ctx.device_id, h.ctx.now, items, n, h.dev.state.active,
				       h.dev.state.n_active, &h.dev.state.identity_tag, state_buf,
				       sizeof(state_buf), &len),
			 0);
	write_file("state.json", state_buf, len);
	fake_world_free(&h.world);
	assert_true(files >= 10);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_report_exact_bytes),
		cmocka_unit_test(test_report_escapes),
		cmocka_unit_test(test_short_buffers_are_refused),
		cmocka_unit_test(test_worst_case_report_fits),
		cmocka_unit_test(test_csr_report_bytes),
		cmocka_unit_test(test_rfc3339),
		cmocka_unit_test(test_state_exact_bytes),
		cmocka_unit_test(test_write_messages_for_the_python_check),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
