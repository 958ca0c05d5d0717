/*
 * COSE_Sign1 ES256 against the IETF COSE working group's vectors (tests/vectors/cose,
 * shared with the Python tests): pass vectors decode, rebuild ToBeSign byte for byte
 * and verify; fail vectors are refused for what was altered.
 */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "certfleet/cose.h"
#include "fixtures.h"

struct vector {
	char json[8192];
	uint8_t cbor[1024];
	size_t cbor_len;
	uint8_t aad[256];
	size_t aad_len;
	uint8_t pub[CF_P256_POINT_LEN];
	const char *title;
};

static void load_vector(const char *file, struct vector *v)
{
	char path[512];
	const char *value;
	size_t len;

	snprintf(path, sizeof(path), "%s/%s", CF_TEST_COSE_VECTORS, file);
	memset(v, 0, sizeof(*v));
	fixture_read(path, (uint8_t *)v->json, sizeof(v->json) - 1);
	len = json_string(v->json, "\"output\"", "cbor", &value);
	v->cbor_len = hex_decode(value, len, v->cbor, sizeof(v->cbor));
	if (strstr(v->json, "\"external\":\"") != NULL) {
		len = json_string(v->json, NULL, "external", &value);
		v->aad_len = hex_decode(value, len, v->aad, sizeof(v->aad));
	}
	v->pub[0] = 0x04;
	len = json_string(v->json, "\"key\"", "x", &value);
	assert_int_equal(b64url_decode(value, len, v->pub + 1, 32), 32);
	len = json_string(v->json, "\"key\"", "y", &value);
	assert_int_equal(b64url_decode(value, len, v->pub + 33, 32), 32);
	json_string(v->json, NULL, "title", &v->title);
}

struct buffer {
	uint8_t data[2048];
	size_t len;
};

static int append(void *ctx, const uint8_t *data, size_t len)
{
	struct buffer *b = ctx;
	if (b->len + len > sizeof(b->data)) {
		return -ENOMEM;
	}
	memcpy(b->data + b->len, data, len);
	b->len += len;
	return 0;
}

static size_t vector_files(const char *prefix, char names[][64], size_t max)
{
	DIR *dir = opendir(CF_TEST_COSE_VECTORS);
	struct dirent *entry;
	size_t n = 0;

	assert_non_null(dir);
	while ((entry = readdir(dir)) != NULL) {
		if (strncmp(entry->d_name, prefix, strlen(prefix)) == 0 &&
		    strstr(entry->d_name, ".json") != NULL) {
			assert_true(n < max);
			snprintf(names[n++], 64, "%.63s", entry->d_name);
		}
	}
	closedir(dir);
	return n;
}

/* Every pass vector decodes, its Sig_structure equals ToBeSign, and it verifies. */
static void test_pass_vectors_verify_and_rebuild_to_be_signed(void **state)
{
	(void)state;
	char names[8][64];
	static struct vector v;
	size_t n = vector_files("sign-pass-", names, 8);

	assert_int_equal(n, 3);
	for (size_t i = 0; i < n; i++) {
		struct cf_cose_sign1 msg;
		struct buffer tbs = {0};
		uint8_t expected[2048];
		const char *hex;

		load_vector(names[i], &v);
		assert_int_equal(cf_cose_decode(v.cbor, v.cbor_len, &msg), 0);
		assert_int_equal(cf_cose_sig_structure(&msg, v.aad, v.aad_len, append, &tbs), 0);
		size_t len = json_string(v.json, "\"intermediates\"", "ToBeSign_hex", &hex);
		size_t expected_len = hex_decode(hex, len, expected, sizeof(expected));
		assert_int_equal(tbs.len, expected_len);
		assert_memory_equal(tbs.data, expected, expected_len);
		assert_int_equal(cf_cose_verify_es256(&msg, v.aad, v.aad_len, v.pub), 0);
		if (v.aad_len > 0) {
			/* the external AAD is bound: without it the signature fails */
			assert_int_equal(cf_cose_verify_es256(&msg, NULL, 0, v.pub), -EBADMSG);
		}
	}
}

/* Every fail vector is refused for what its title says was altered. */
static void test_fail_vectors_are_refused_for_what_was_altered(void **state)
{
	(void)state;
	char names[8][64];
	static struct vector v;
	size_t n = vector_files("sign-fail-", names, 8);

	assert_int_equal(n, 6);
	for (size_t i = 0; i < n; i++) {
		struct cf_cose_sign1 msg;

		load_vector(names[i], &v);
		int decoded = cf_cose_decode(v.cbor, v.cbor_len, &msg);
		if (strncmp(strstr(v.title, ": ") + 2, "Wrong CBOR Tag", 14) == 0) {
			assert_int_equal(decoded, -EBADMSG);
			continue;
		}
		assert_int_equal(decoded, 0);
		if (strncmp(strstr(v.title, ": ") + 2, "Change Sign Algorithm", 21) == 0) {
			assert_true(msg.alg_present);
			assert_false(msg.alg_is_es256);
			continue;
		}
		assert_int_equal(cf_cose_verify_es256(&msg, v.aad, v.aad_len, v.pub), -EBADMSG);
	}
}

/* A byte string head of each width is what CBOR's preferred encoding gives. */
static void test_sig_structure_heads_for_long_payloads(void **state)
{
	(void)state;
	static uint8_t payload[300];
	struct cf_cose_sign1 msg = {.payload = payload, .payload_len = sizeof(payload)};
	static struct buffer out;

	out.len = 0;
	assert_int_equal(cf_cose_sig_structure(&msg, NULL, 0, append, &out), 0);
	/* 84 6a "Signature1" 40 40 59 01 2c */
	assert_int_equal(out.len, 12 + 1 + 1 + 3 + sizeof(payload));
	assert_int_equal(out.data[12], 0x40);
	assert_int_equal(out.data[13], 0x40);
	assert_int_equal(out.data[14], 0x59);
	assert_int_equal(out.data[15], 0x01);
	assert_int_equal(out.data[16], 0x2c);
}

/* A point off the curve, a compressed point or a short one is not a signer key. */
static void test_p256_point_validation(void **state)
{
	(void)state;
	static struct vector v;
	uint8_t bad[CF_P256_POINT_LEN];

	load_vector("sign-pass-01.json", &v);
	assert_true(cf_p256_point_valid(v.pub, sizeof(v.pub)));
	memcpy(bad, v.pub, sizeof(bad));
	bad[64] ^= 1;
	assert_false(cf_p256_point_valid(bad, sizeof(bad)));
	bad[0] = 0x02;
	assert_false(cf_p256_point_valid(bad, sizeof(bad)));
	assert_false(cf_p256_point_valid(v.pub, sizeof(v.pub) - 1));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pass_vectors_verify_and_rebuild_to_be_signed),
		cmocka_unit_test(test_fail_vectors_are_refused_for_what_was_altered),
		cmocka_unit_test(test_sig_structure_heads_for_long_payloads),
		cmocka_unit_test(test_p256_point_validation),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
