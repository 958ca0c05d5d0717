/*
 * The host port's key store and record refuse what the nRF9160 refuses, with its
 * errno (the model is simulator/modem.py), and tell what AT%CMNG=1 and
 * AT%CERTEXPIRY tell: items by (sec_tag, type), SHA-256, the earliest notAfter; and
 * %KEYGEN's rules: offline only, an empty slot, a P-256 key that is never read back, a
 * CSR of CN=<subject>, a key item whose digest is its public key's.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <mbedtls/pk.h>
#include <mbedtls/x509_csr.h>
#include <psa/crypto.h>

#include "device_harness.h"
#include "host_ports.h"

static struct harness h;
static struct cf_keystore ks;

static int setup(void **state)
{
	(void)state;
	harness_init(&h, false); /* sec_tag 42 holds the factory CA */
	ks = cf_host_keystore_port(&h.world.keystore);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	fake_world_free(&h.world);
	return 0;
}

static int put(uint32_t tag, uint8_t type, const char *content, size_t len)
{
	return ks.write(ks.ctx, tag, type, (const uint8_t *)content, len);
}

/* Writes and deletes only while offline (CFUN=4): -EPERM online. */
static void test_changes_only_offline(void **state)
{
	(void)state;
	assert_int_equal(put(43, 0, h.factory_ca, strlen(h.factory_ca)), -EPERM);
	assert_int_equal(ks.remove(ks.ctx, 42, 0), -EPERM);
	assert_int_equal(ks.set_online(ks.ctx, false), 0);
	assert_int_equal(put(43, 0, h.factory_ca, strlen(h.factory_ca)), 0);
	assert_int_equal(ks.remove(ks.ctx, 43, 0), 0);
}

/* One item per (sec_tag, type): a taken slot is -EALREADY, a missing one -ENOENT. */
static void test_one_item_per_slot(void **state)
{
	(void)state;
	assert_int_equal(ks.set_online(ks.ctx, false), 0);
	assert_int_equal(put(42, 0, h.factory_ca, strlen(h.factory_ca)), -EALREADY);
	assert_int_equal(put(42, 2, "key", 3), 0); /* another type in the same sec_tag */
	assert_int_equal(ks.remove(ks.ctx, 42, 2), 0);
	assert_int_equal(ks.remove(ks.ctx, 42, 2), -ENOENT);
}

/* Invalid content is -EINVAL: empty, a CA chain over 4096 bytes, a certificate that is not one. */
static void test_invalid_content(void **state)
{
	(void)state;
	static char big[CF_CA_CHAIN_MAX_BYTES + 2];
	assert_int_equal(ks.set_online(ks.ctx, false), 0);
	assert_int_equal(put(43, 0, "", 0), -EINVAL);
	assert_int_equal(put(43, 0, "not a certificate", 17), -EINVAL);
	assert_int_equal(put(43, 1, "not a certificate", 17), -EINVAL);
	memset(big, 'A', sizeof(big) - 1);
	assert_int_equal(put(43, 0, big, CF_CA_CHAIN_MAX_BYTES + 1), -EINVAL);
	assert_int_equal(put(CF_SEC_TAG_MAX + 1u, 2, "key", 3), -EINVAL);
	assert_int_equal(put(43, CF_CRED_TYPE_MAX + 1, "key", 3), -EINVAL);
	assert_int_equal(put(43, 3, "psk", 3), 0); /* keys are not parsed */
}

/* A full store is -ENOMEM. */
static void test_full_store(void **state)
{
	(void)state;
	h.world.keystore.capacity = strlen(h.factory_ca) + 4;
	assert_int_equal(ks.set_online(ks.ctx, false), 0);
	assert_int_equal(put(43, 3, "psk", 3), 0);
	assert_int_equal(put(44, 3, "psk2", 4), -ENOMEM);
}

/* Certificates read back as stored; keys cannot be read. */
static void test_read_back(void **state)
{
	(void)state;
	static uint8_t buf[4096];
	size_t len = 0;
	assert_int_equal(cf_host_keystore_read(&h.world.keystore, 42, 0, buf, sizeof(buf), &len), 0);
	assert_int_equal(len, strlen(h.factory_ca));
	assert_memory_equal(buf, h.factory_ca, len);
	assert_int_equal(cf_host_keystore_read(&h.world.keystore, 42, 2, buf, sizeof(buf), &len), -EPERM);
	assert_int_equal(cf_host_keystore_read(&h.world.keystore, 44, 0, buf, sizeof(buf), &len), -ENOENT);
	assert_int_equal(cf_host_keystore_read(&h.world.keystore, 42, 0, buf, 10, &len), -ENOMEM);
}

/* The list is by (sec_tag, type) with each item's SHA-256 and the CA's notAfter. */
static void test_list(void **state)
{
	(void)state;
	struct cf_state_item items[4];
	uint8_t expected[32];
	size_t n = 0, len = 0;

	assert_int_equal(ks.set_online(ks.ctx, false), 0);
	assert_int_equal(put(7, 3, "psk", 3), 0);
	assert_int_equal(put(42, 3, "psk", 3), 0);
	assert_int_equal(cf_host_keystore_list(&h.world.keystore, items, 4, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(items[0].sec_tag, 7);
	assert_int_equal(items[1].sec_tag, 42);
	assert_int_equal(items[1].type, 0);
	assert_int_equal(items[2].type, 3);
	assert_int_equal(psa_crypto_init(), PSA_SUCCESS);
	assert_int_equal(psa_hash_compute(PSA_ALG_SHA_256, (const uint8_t *)h.factory_ca,
					  strlen(h.factory_ca), expected, 32, &len),
			 PSA_SUCCESS);
	assert_memory_equal(items[1].sha256, expected, 32);
	assert_int_equal(items[1].not_after, 2082758400); /* 2036-01-01T00:00:00Z, make_bundles.py */
	assert_int_equal(items[0].not_after, 0);
	assert_int_equal(cf_host_keystore_list(&h.world.keystore, items, 2, &n), -ENOSPC);
}

/* The record round-trips, and a missing one is -ENOENT. */
static void test_record(void **state)
{
	(void)state;
	struct cf_host_record record;
	struct cf_record_store port;
	uint8_t buf[16];
	size_t len = 0;
	char path[128];

	snprintf(path, sizeof(path), "%s/other-record", h.world.dir);
	assert_int_equal(cf_host_record_init(&record, path), 0);
	port = cf_host_record_port(&record);
	assert_int_equal(port.load(port.ctx, buf, sizeof(buf), &len), -ENOENT);
	assert_int_equal(port.store(port.ctx, (const uint8_t *)"abc", 3), 0);
	assert_int_equal(port.load(port.ctx, buf, sizeof(buf), &len), 0);
	assert_int_equal(len, 3);
	assert_memory_equal(buf, "abc", 3);
}

static int keygen(uint32_t tag, const char *subject, char *out, size_t len, size_t *out_len)
{
	return ks.keygen(ks.ctx, tag, subject, strlen(subject), 7, out, len, out_len);
}

/* %KEYGEN only offline, into an empty slot; a too-small answer buffer is -ENOSPC. */
static void test_keygen_rules(void **state)
{
	(void)state;
	static char out[CF_CSR_FIELD_MAX_BYTES + 1];
	size_t len = 0;

	assert_int_equal(keygen(44, "nrf-1", out, sizeof(out), &len), -EPERM);
	assert_int_equal(ks.set_online(ks.ctx, false), 0);
	assert_int_equal(keygen(44, "nrf-1", out, 100, &len), -ENOSPC);
	assert_false(fake_keystore_has(&h.world, 44, 2)); /* a failed keygen leaves no key */
	assert_int_equal(keygen(44, "nrf-1", out, sizeof(out), &len), 0);
	assert_int_equal(strlen(out), len);
	assert_int_equal(keygen(44, "nrf-1", out, sizeof(out), &len), -EALREADY);
	assert_int_equal(keygen(44, "", out, sizeof(out), &len), -EALREADY);
	assert_int_equal(keygen(46, "", out, sizeof(out), &len), -EINVAL);
}

/* The answer is base64url CSR "." base64url COSE; the CSR is CN=<subject>, its key the
 * made one, whose item is never read back and whose digest is of its public key only. */
static void test_keygen_makes_a_csr_of_the_key(void **state)
{
	(void)state;
	static char out[CF_CSR_FIELD_MAX_BYTES + 1];
	static uint8_t der[CF_CSR_FIELD_MAX_BYTES], spki[200], buf[64];
	size_t len = 0, hash_len = 0;
	uint8_t digest[32], expected[32];
	mbedtls_x509_csr csr;
	char subject[80];

	assert_int_equal(ks.set_online(ks.ctx, false), 0);
	assert_int_equal(keygen(44, "nrf-1,a", out, sizeof(out), &len), 0);
	assert_int_equal(ks.set_online(ks.ctx, true), 0);
	const char *dot = strchr(out, '.');
	assert_non_null(dot);
	assert_null(strchr(dot + 1, '.'));
	assert_null(strchr(out, '='));
	size_t der_len = b64url_decode(out, (size_t)(dot - out), der, sizeof(der));
	assert_true(der_len <= 1024);
	mbedtls_x509_csr_init(&csr);
	assert_int_equal(mbedtls_x509_csr_parse_der(&csr, der, der_len), 0);
	assert_true(mbedtls_x509_dn_gets(subject, sizeof(subject), &csr.subject) > 0);
	assert_string_equal(subject, "CN=nrf-1\\,a");
	assert_int_equal(mbedtls_pk_get_type(&csr.pk), MBEDTLS_PK_ECKEY);
	int spki_len = mbedtls_pk_write_pubkey_der(&csr.pk, spki, sizeof(spki));
	assert_true(spki_len > 0);
	assert_int_equal(psa_hash_compute(PSA_ALG_SHA_256, spki + sizeof(spki) - spki_len,
					  (size_t)spki_len, expected, 32, &hash_len),
			 PSA_SUCCESS);
	mbedtls_x509_csr_free(&csr);
	assert_int_equal(ks.digest(ks.ctx, 44, 2, digest), 0);
	assert_memory_equal(digest, expected, 32); /* %CMNG=1 of a made key: its public key */
	assert_int_equal(cf_host_keystore_read(&h.world.keystore, 44, 2, buf, sizeof(buf), &len),
			 -EPERM);
	size_t cose_len = b64url_decode(dot + 1, strlen(dot + 1), der, sizeof(der));
	assert_true(cose_len > 64);
	assert_int_equal(der[0], 0xd2); /* COSE_Sign1, tagged */
}

/* The clock is the system's, in seconds. */
static void test_clock(void **state)
{
	(void)state;
	struct cf_clock clock = cf_host_clock();
	uint64_t before = (uint64_t)time(NULL);
	uint64_t now = clock.now(clock.ctx);
	assert_in_range(now, before, before + 2);
}

#define T(test) cmocka_unit_test_setup_teardown(test, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_changes_only_offline), T(test_one_item_per_slot), T(test_invalid_content),
		T(test_full_store),	      T(test_read_back),	T(test_list),
		T(test_record),		      T(test_clock),		T(test_keygen_rules),
		T(test_keygen_makes_a_csr_of_the_key),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
