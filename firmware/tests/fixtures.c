/* Test data readers; see fixtures.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fixtures.h"

size_t fixture_read(const char *path, uint8_t *buf, size_t len)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		fail_msg("cannot read %s", path);
	}
	size_t n = fread(buf, 1, len, f);
	assert_true(feof(f) || n < len);
	fclose(f);
	return n;
}

size_t fixture_bundle(const char *name, uint8_t *buf, size_t len)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/bundles/%s.cbor", CF_TEST_VECTORS, name);
	return fixture_read(path, buf, len);
}

size_t hex_decode(const char *hex, size_t hex_len, uint8_t *out, size_t max)
{
	size_t n = 0;
	assert_int_equal(hex_len % 2, 0);
	for (size_t i = 0; i < hex_len; i += 2) {
		unsigned value;
		char pair[3] = {hex[i], hex[i + 1], 0};
		assert_int_equal(sscanf(pair, "%2x", &value), 1);
		assert_true(n < max);
		out[n++] = (uint8_t)value;
	}
	return n;
}

size_t b64url_decode(const char *text, size_t text_len, uint8_t *out, size_t max)
{
	static const char alphabet[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	uint32_t acc = 0;
	int bits = 0;
	size_t n = 0;
	for (size_t i = 0; i < text_len; i++) {
		const char *pos = strchr(alphabet, text[i]);
		assert_non_null(pos);
		acc = acc << 6 | (uint32_t)(pos - alphabet);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			assert_true(n < max);
			out[n++] = (uint8_t)(acc >> bits);
		}
	}
	return n;
}

size_t json_string(const char *json, const char *after, const char *key, const char **value)
{
	char pattern[64];
	const char *start = after != NULL ? strstr(json, after) : json;
	assert_non_null(start);
	snprintf(pattern, sizeof(pattern), "\"%s\":\"", key);
	const char *found = strstr(start, pattern);
	assert_non_null(found);
	*value = found + strlen(pattern);
	return (size_t)(strchr(*value, '"') - *value);
}

void fixture_context(struct fixture_context *ctx)
{
	char path[512], line[512];
	size_t key = 0;
	snprintf(path, sizeof(path), "%s/bundles/CONTEXT", CF_TEST_VECTORS);
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	memset(ctx, 0, sizeof(*ctx));
	while (fgets(line, sizeof(line), f) != NULL) {
		char name[32], kid[64], pub[256];
		unsigned long long number;
		if (sscanf(line, "device %64s", ctx->device_id) == 1) {
			continue;
		}
		if (sscanf(line, "now %llu", &number) == 1) {
			ctx->now = number;
		} else if (sscanf(line, "last_seq %llu", &number) == 1) {
			ctx->last_seq = number;
		} else if (sscanf(line, "revoked_before %llu", &number) == 1) {
			ctx->revoked_before = number;
		} else if (sscanf(line, "revoked %63s", kid) == 1) {
			assert_true(ctx->n_revoked < CF_REVOKED_KIDS_MAX);
			assert_int_equal(hex_decode(kid, strlen(kid), ctx->revoked[ctx->n_revoked++], CF_KID_LEN),
					 CF_KID_LEN);
		} else if (sscanf(line, "key %31s %63s %255s", name, kid, pub) == 3) {
			assert_true(key < 6);
			assert_int_equal(hex_decode(kid, strlen(kid), ctx->keys[key].kid, CF_KID_LEN), CF_KID_LEN);
			assert_int_equal(hex_decode(pub, strlen(pub), ctx->keys[key].pub, CF_P256_POINT_LEN),
					 CF_P256_POINT_LEN);
			key++;
		}
	}
	fclose(f);
	assert_int_equal(key, 6);
}

size_t fixture_manifest(struct fixture_case *cases, size_t max)
{
	char path[512], line[256], agree[16];
	size_t n = 0;
	snprintf(path, sizeof(path), "%s/bundles/MANIFEST", CF_TEST_VECTORS);
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f) != NULL) {
		assert_true(n < max);
		assert_int_equal(sscanf(line, "%63s %31s %15s", cases[n].name, cases[n].reason, agree), 3);
		cases[n].agree = strcmp(agree, "agree") == 0;
		n++;
	}
	fclose(f);
	return n;
}
