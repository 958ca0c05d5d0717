/*
 * libFuzzer targets over the whole core, "bytes in -> report out", with ASan and
 * UBSan. Two entries, chosen at build time:
 *
 * - FUZZ_ENVELOPE: the input is a received bundle as is. Almost nothing verifies, so
 *   this exercises checks 1 to 5; it asserts that no input which did not verify
 *   reaches the key store.
 * - FUZZ_PAYLOAD: the input is a payload, which the harness signs with the device's
 *   trusted key, so checks 6 to 13 and every op run on fuzzed content. A payload that
 *   starts with DELEGATED is signed instead by a worker's key under a delegation of that
 *   root (tests/vectors/bundles/delegation.cose, FUZZ_DELEGATION), so check 7a runs on
 *   fuzzed content too.
 *
 * After each input the device must still hold a working trust set: 1 to 7 distinct
 * active tags, each with a CA chain item, no delete pending; and an identity tag, when
 * it has one, holds a client certificate and key. The ports are in memory; a keygen
 * makes the key of tests/make_bundles.py's IDENTITY_KEY (its digest is the SHA-256 of
 * that key's SubjectPublicKeyInfo), so an identity stage of the seeds gets through.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <psa/crypto.h>

#include "certfleet/cose.h"
#include "certfleet/device.h"
#include "certfleet/message.h"

#define ITEMS_MAX 32
#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

static const char DEVICE_ID[] = "nrf-352656100000000";
static const uint64_t NOW = 1800000000;
/* tests/make_bundles.py's KEY (the trusted root) and ONLINE_KEY (its delegated key) */
static const uint8_t ROOT_SCALAR[32] = {[28] = 0x5e, [29] = 0xed, [30] = 0x00, [31] = 0x01};
static const uint8_t ONLINE_SCALAR[32] = {[28] = 0x5e, [29] = 0xed, [30] = 0x02, [31] = 0x00};

struct item {
	uint32_t tag;
	uint8_t type;
	bool used;
};

static struct {
	struct item items[ITEMS_MAX];
	bool online;
	int writes;
	uint8_t record[2048];
	size_t record_len;
	enum cf_phase first_phase;
	size_t reports;
	psa_key_id_t signing_key;
	struct cf_signer signer;
	uint8_t identity_spki_sha256[32];
	psa_key_id_t online_key; /* signs under the delegation */
	struct cf_signer delegate; /* the online key, as a device would trust it */
	uint8_t delegation[CF_DELEGATION_MAX_BYTES];
	size_t delegation_len;
} world;

static struct item *find(uint32_t tag, uint8_t type)
{
	for (size_t i = 0; i < ITEMS_MAX; i++) {
		if (world.items[i].used && world.items[i].tag == tag && world.items[i].type == type) {
			return &world.items[i];
		}
	}
	return NULL;
}

static int ks_set_online(void *ctx, bool online)
{
	(void)ctx;
	world.online = online;
	return 0;
}

static int ks_write(void *ctx, uint32_t tag, uint8_t type, const uint8_t *data, size_t len)
{
	(void)ctx;
	world.writes++;
	if (world.online) {
		return -EPERM;
	}
	if (find(tag, type) != NULL) {
		return -EALREADY;
	}
	if (type != CF_CRED_TYPE_CLIENT_KEY && (len < 10 || memcmp(data, "-----BEGIN", 10) != 0)) {
		return -EINVAL;
	}
	for (size_t i = 0; i < ITEMS_MAX; i++) {
		if (!world.items[i].used) {
			world.items[i] = (struct item){tag, type, true};
			return 0;
		}
	}
	return -ENOMEM;
}

static int ks_remove(void *ctx, uint32_t tag, uint8_t type)
{
	(void)ctx;
	struct item *item = find(tag, type);
	if (world.online) {
		return -EPERM;
	}
	if (item == NULL) {
		return -ENOENT;
	}
	item->used = false;
	return 0;
}

static int ks_exists(void *ctx, uint32_t tag, uint8_t type, bool *exists)
{
	(void)ctx;
	*exists = find(tag, type) != NULL;
	return 0;
}

static int ks_digest(void *ctx, uint32_t tag, uint8_t type, uint8_t digest[32])
{
	(void)ctx;
	if (type != CF_CRED_TYPE_CLIENT_KEY || find(tag, type) == NULL) {
		return find(tag, type) == NULL ? -ENOENT : -ENOTSUP;
	}
	memcpy(digest, world.identity_spki_sha256, 32);
	return 0;
}

static int ks_keygen(void *ctx, uint32_t tag, const char *subject, size_t subject_len,
		     uint64_t seq, char *out, size_t len, size_t *out_len)
{
	static const char answer[] = "MIIB.0oRD";
	(void)seq;
	CHECK(subject != NULL && subject_len >= 1 && subject_len <= CF_SUBJECT_MAX_BYTES);
	CHECK(len > CF_CSR_FIELD_MAX_BYTES);
	int err = ks_write(ctx, tag, CF_CRED_TYPE_CLIENT_KEY, (const uint8_t *)"key", 3);
	if (err != 0) {
		return err;
	}
	memcpy(out, answer, sizeof(answer));
	*out_len = sizeof(answer) - 1;
	return 0;
}

static int record_load(void *ctx, uint8_t *buf, size_t len, size_t *out_len)
{
	(void)ctx;
	CHECK(world.record_len <= len);
	memcpy(buf, world.record, world.record_len);
	*out_len = world.record_len;
	return world.record_len > 0 ? 0 : -ENOENT;
}

static int record_store(void *ctx, const uint8_t *buf, size_t len)
{
	(void)ctx;
	CHECK(len <= sizeof(world.record));
	memcpy(world.record, buf, len);
	world.record_len = len;
	return 0;
}

static uint64_t clock_now(void *ctx)
{
	(void)ctx;
	return NOW;
}

static enum cf_reason probe_run(void *ctx, const char *host, size_t host_len, uint16_t port,
				const uint32_t *tags, size_t n_tags, const uint32_t *client_tag)
{
	(void)ctx, (void)port;
	CHECK(client_tag == NULL || (find(*client_tag, CF_CRED_TYPE_CLIENT_CERT) != NULL &&
				     find(*client_tag, CF_CRED_TYPE_CLIENT_KEY) != NULL));
	CHECK(host != NULL && host_len >= 1 && host_len <= CF_PROBE_HOST_MAX_BYTES);
	CHECK(n_tags >= 1 && n_tags <= CF_TAG_LIST_MAX);
	return tags[0] % 2 == 0 ? CF_REASON_OK : CF_REASON_UNKNOWN_CA;
}

static int publish(void *ctx, const struct cf_report *report)
{
	(void)ctx;
	char json[CF_REPORT_JSON_MAX];
	size_t len = 0;
	CHECK(cf_report_json(report, DEVICE_ID, json, sizeof(json), &len) == 0);
	if (world.reports++ == 0) {
		world.first_phase = report->phase;
	}
	return 0;
}

static void check_trust(const struct cf_device *dev)
{
	const struct cf_state *st = &dev->state;
	CHECK(st->n_active >= 1 && st->n_active <= CF_TAG_LIST_MAX);
	for (size_t i = 0; i < st->n_active; i++) {
		CHECK(find(st->active[i], CF_CRED_TYPE_CA_CHAIN) != NULL);
		for (size_t j = 0; j < i; j++) {
			CHECK(st->active[i] != st->active[j]);
		}
	}
	CHECK(!st->has_identity || (find(st->identity_tag, CF_CRED_TYPE_CLIENT_CERT) != NULL &&
				    find(st->identity_tag, CF_CRED_TYPE_CLIENT_KEY) != NULL));
	CHECK(st->n_pending_delete == 0);
	CHECK(world.online);
}

static void provision(struct cf_device *dev)
{
	const uint32_t active[] = {42};
	struct cf_device_ports ports = {
		.keystore = {NULL, ks_set_online, ks_write, ks_remove, ks_exists, ks_digest, ks_keygen},
		.record = {NULL, record_load, record_store},
		.clock = {NULL, clock_now},
		.probe = {NULL, probe_run},
		.transport = {NULL, publish, NULL},
	};
	/* everything but the keys and the delegation */
	memset(world.items, 0, sizeof(world.items));
	world.writes = 0;
	world.record_len = 0;
	world.first_phase = CF_PHASE_RECEIVED;
	world.reports = 0;
	world.online = true;
	world.items[0] = (struct item){42, 0, true};
	CHECK(cf_device_init(dev, DEVICE_ID, &ports) == -ENOENT);
	CHECK(cf_device_provision(dev, &world.signer, 1, active, 1) == 0);
	dev->state.last_seq = 10;
}

#ifdef FUZZ_PAYLOAD
static int hash_update(void *ctx, const uint8_t *data, size_t len)
{
	return psa_hash_update(ctx, data, len) == PSA_SUCCESS ? 0 : -EIO;
}

/*
 * COSE_Sign1 around `payload`, signed ES256 with the trusted key, or with the online key
 * and its delegation in the protected header ({1: -7, 4: kid, -65537: delegation}).
 */
static size_t sign(const uint8_t *payload, size_t len, bool delegated, uint8_t *out, size_t cap)
{
	const struct cf_signer *key = delegated ? &world.delegate : &world.signer;
	const size_t dlg_len = delegated ? world.delegation_len : 0;
	/* the protected map: 1 + alg 2 + kid 10 (+ label 5, bstr head 3, the delegation) */
	const size_t protected_len = 13 + (delegated ? 8 + dlg_len : 0);
	uint8_t hash[32], signature[64];
	size_t at = 0, hash_len = 0, sig_len = 0;
	struct cf_cose_sign1 msg;
	psa_hash_operation_t op = PSA_HASH_OPERATION_INIT;

	if (len > 0xffff || 2 + 3 + protected_len + 4 + len + 2 + 64 > cap) {
		return 0;
	}
	out[at++] = 0xd2;
	out[at++] = 0x84;
	out[at++] = 0x59; /* protected bstr, 2-byte length */
	out[at++] = (uint8_t)(protected_len >> 8);
	out[at++] = (uint8_t)protected_len;
	const size_t protected_at = at;
	out[at++] = delegated ? 0xa3 : 0xa2;
	out[at++] = 0x01;
	out[at++] = 0x26;
	out[at++] = 0x04;
	out[at++] = 0x48;
	memcpy(out + at, key->kid, CF_KID_LEN);
	at += CF_KID_LEN;
	if (delegated) {
		static const uint8_t label[] = {0x3a, 0x00, 0x01, 0x00, 0x00, 0x59};
		memcpy(out + at, label, sizeof(label));
		at += sizeof(label);
		out[at++] = (uint8_t)(dlg_len >> 8);
		out[at++] = (uint8_t)dlg_len;
		memcpy(out + at, world.delegation, dlg_len);
		at += dlg_len;
	}
	out[at++] = 0xa0; /* unprotected {} */
	out[at++] = 0x59; /* payload bstr, 2-byte length */
	out[at++] = (uint8_t)(len >> 8);
	out[at++] = (uint8_t)len;
	memcpy(out + at, payload, len);
	at += len;
	msg = (struct cf_cose_sign1){.protected_bytes = out + protected_at,
				     .protected_len = protected_len,
				     .payload = payload,
				     .payload_len = len};
	CHECK(psa_hash_setup(&op, PSA_ALG_SHA_256) == PSA_SUCCESS);
	CHECK(cf_cose_sig_structure(&msg, NULL, 0, hash_update, &op) == 0);
	CHECK(psa_hash_finish(&op, hash, sizeof(hash), &hash_len) == PSA_SUCCESS);
	CHECK(psa_sign_hash(delegated ? world.online_key : world.signing_key,
			    PSA_ALG_ECDSA(PSA_ALG_SHA_256), hash, hash_len, signature,
			    sizeof(signature), &sig_len) == PSA_SUCCESS);
	out[at++] = 0x58;
	out[at++] = 64;
	memcpy(out + at, signature, 64);
	return at + 64;
}

/* The delegation of the online key by the root, as make_bundles.py wrote it. */
static void read_delegation(void)
{
	FILE *f = fopen(FUZZ_DELEGATION, "rb");
	CHECK(f != NULL);
	world.delegation_len = fread(world.delegation, 1, sizeof(world.delegation), f);
	CHECK(world.delegation_len > 0 && feof(f));
	fclose(f);
}
#endif

/* A key id: the first 8 bytes of SHA-256 over the P-256 SubjectPublicKeyInfo. */
static void key_id(const uint8_t pub[CF_P256_POINT_LEN], uint8_t kid[CF_KID_LEN])
{
	static const uint8_t spki_head[26] = {0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48,
					      0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
					      0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00};
	uint8_t spki[26 + CF_P256_POINT_LEN], digest[32];
	size_t len = 0;

	memcpy(spki, spki_head, sizeof(spki_head));
	memcpy(spki + sizeof(spki_head), pub, CF_P256_POINT_LEN);
	CHECK(psa_hash_compute(PSA_ALG_SHA_256, spki, sizeof(spki), digest, sizeof(digest), &len) ==
	      PSA_SUCCESS);
	memcpy(kid, digest, CF_KID_LEN);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	psa_key_attributes_t attributes = PSA_KEY_ATTRIBUTES_INIT;
	size_t len = 0;

	CHECK(psa_crypto_init() == PSA_SUCCESS);
	psa_set_key_type(&attributes, PSA_KEY_TYPE_ECC_KEY_PAIR(PSA_ECC_FAMILY_SECP_R1));
	psa_set_key_bits(&attributes, 256);
	psa_set_key_usage_flags(&attributes, PSA_KEY_USAGE_SIGN_HASH);
	psa_set_key_algorithm(&attributes, PSA_ALG_ECDSA(PSA_ALG_SHA_256));
	/* the device's trusted root, and the worker's key it delegates (kid from the SPKI) */
	CHECK(psa_import_key(&attributes, ROOT_SCALAR, 32, &world.signing_key) == PSA_SUCCESS);
	CHECK(psa_import_key(&attributes, ONLINE_SCALAR, 32, &world.online_key) == PSA_SUCCESS);
	CHECK(psa_export_public_key(world.signing_key, world.signer.pub, sizeof(world.signer.pub),
				    &len) == PSA_SUCCESS);
	CHECK(psa_export_public_key(world.online_key, world.delegate.pub, sizeof(world.delegate.pub),
				    &len) == PSA_SUCCESS);
	key_id(world.signer.pub, world.signer.kid);
	key_id(world.delegate.pub, world.delegate.kid);
#ifdef FUZZ_PAYLOAD
	read_delegation();
#endif
	/* the identity key's SubjectPublicKeyInfo: the P-256 header and its point */
	static const uint8_t identity_scalar[32] = {[28] = 0x5e, [29] = 0xed, [30] = 0x01, [31] = 0x00};
	static const uint8_t spki_head[26] = {0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48,
					      0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
					      0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00};
	uint8_t spki[26 + CF_P256_POINT_LEN];
	psa_key_id_t identity;
	CHECK(psa_import_key(&attributes, identity_scalar, sizeof(identity_scalar), &identity) ==
	      PSA_SUCCESS);
	memcpy(spki, spki_head, sizeof(spki_head));
	CHECK(psa_export_public_key(identity, spki + sizeof(spki_head), CF_P256_POINT_LEN, &len) ==
	      PSA_SUCCESS);
	CHECK(psa_hash_compute(PSA_ALG_SHA_256, spki, sizeof(spki), world.identity_spki_sha256, 32,
			       &len) == PSA_SUCCESS);
	psa_destroy_key(identity);
	return 0;
}

/* In payload mode an input holds up to four payloads, split at this marker; one that
 * starts with DELEGATED is signed under the delegation. */
static const uint8_t SPLIT[4] = {0xff, 0x00, 0xff, 0x00};
static const uint8_t DELEGATED[4] = {0xff, 0x01, 0xff, 0x01};

static size_t next_chunk(const uint8_t *data, size_t size, size_t *skip)
{
	for (size_t i = 0; i + sizeof(SPLIT) <= size; i++) {
		if (memcmp(data + i, SPLIT, sizeof(SPLIT)) == 0) {
			*skip = i + sizeof(SPLIT);
			return i;
		}
	}
	*skip = size;
	return size;
}

static void handle(struct cf_device *dev, const uint8_t *bundle, size_t size)
{
	world.reports = 0;
	world.writes = 0;
	CHECK(cf_device_handle(dev, bundle, size) == 0);
	CHECK(world.reports >= 1);
	/* nothing that did not pass every check reaches the key store */
	CHECK(world.writes == 0 || world.first_phase == CF_PHASE_RECEIVED);
	check_trust(dev);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct cf_device dev;
	static uint8_t bundle[CF_BUNDLE_MAX_BYTES + 128];

	provision(&dev);
#ifdef FUZZ_PAYLOAD
	for (int round = 0; round < 4 && size > 0; round++) {
		size_t skip = 0, len = next_chunk(data, size, &skip);
		const bool delegated = len >= sizeof(DELEGATED) && memcmp(data, DELEGATED, sizeof(DELEGATED)) == 0;
		const size_t from = delegated ? sizeof(DELEGATED) : 0;
		size_t signed_len = sign(data + from, len - from, delegated, bundle, sizeof(bundle));
		if (signed_len > 0) {
			handle(&dev, bundle, signed_len);
		}
		data += skip;
		size -= skip;
	}
#else
	if (size <= sizeof(bundle)) {
		memcpy(bundle, data, size);
		handle(&dev, bundle, size);
	}
#endif
	CHECK(cf_device_tick(&dev) == 0);
	check_trust(&dev);
	return 0;
}
