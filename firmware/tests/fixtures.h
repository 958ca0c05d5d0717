/* Test data: files under tests/vectors, the shared COSE vectors, hex and base64url. */
#ifndef CF_TEST_FIXTURES_H_
#define CF_TEST_FIXTURES_H_

#include <stddef.h>
#include <stdint.h>

#include "certfleet/bundle.h"

#define FIXTURE_MAX (CF_BUNDLE_MAX_BYTES + 64)

/** Read a whole file into buf; returns its length, fails the test when unreadable. */
size_t fixture_read(const char *path, uint8_t *buf, size_t len);
/** Read tests/vectors/bundles/<name>.cbor. */
size_t fixture_bundle(const char *name, uint8_t *buf, size_t len);

/** The CONTEXT of the bundle fixtures. */
struct fixture_context {
	char device_id[CF_DEVICE_ID_MAX + 1];
	uint64_t now;
	uint64_t last_seq;
	struct cf_signer keys[6]; /* signer, new-0..3, other */
	uint8_t revoked[CF_REVOKED_KIDS_MAX][CF_KID_LEN]; /* the device's revocation */
	size_t n_revoked;
	uint64_t revoked_before;
};
void fixture_context(struct fixture_context *ctx);

/** One MANIFEST line. */
struct fixture_case {
	char name[64];
	char reason[32];
	int agree;
};
/** Read MANIFEST into cases; returns the count. */
size_t fixture_manifest(struct fixture_case *cases, size_t max);

/** Decode `hex` (any case) into out; returns the byte count. */
size_t hex_decode(const char *hex, size_t hex_len, uint8_t *out, size_t max);
/** Decode unpadded base64url; returns the byte count. */
size_t b64url_decode(const char *text, size_t text_len, uint8_t *out, size_t max);
/** The string value of the first "key":"value" after `after` in a JSON text. */
size_t json_string(const char *json, const char *after, const char *key, const char **value);

#endif /* CF_TEST_FIXTURES_H_ */
