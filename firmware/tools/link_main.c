/*
 * `make size`: a firmware image that calls the whole public API, so that linking with
 * --gc-sections keeps exactly what a device needs. PSA is stubbed (NCS brings its own);
 * built once with -DBASELINE (an empty main) to subtract the C runtime's start-up.
 */
#include <psa/crypto.h>

#include "certfleet/device.h"
#include "certfleet/message.h"

#ifndef BASELINE
psa_status_t psa_crypto_init(void) { return PSA_ERROR_NOT_SUPPORTED; }
psa_status_t psa_hash_setup(psa_hash_operation_t *op, psa_algorithm_t alg)
{
	(void)op, (void)alg;
	return PSA_ERROR_NOT_SUPPORTED;
}
psa_status_t psa_hash_update(psa_hash_operation_t *op, const uint8_t *in, size_t len)
{
	(void)op, (void)in, (void)len;
	return PSA_ERROR_NOT_SUPPORTED;
}
psa_status_t psa_hash_finish(psa_hash_operation_t *op, uint8_t *hash, size_t size, size_t *len)
{
	(void)op, (void)hash, (void)size, (void)len;
	return PSA_ERROR_NOT_SUPPORTED;
}
psa_status_t psa_hash_compute(psa_algorithm_t alg, const uint8_t *in, size_t len, uint8_t *hash,
			      size_t size, size_t *out_len)
{
	(void)alg, (void)in, (void)len, (void)hash, (void)size, (void)out_len;
	return PSA_ERROR_NOT_SUPPORTED;
}
psa_status_t psa_hash_abort(psa_hash_operation_t *op)
{
	(void)op;
	return PSA_SUCCESS;
}
psa_status_t psa_import_key(const psa_key_attributes_t *attr, const uint8_t *data, size_t len,
			    mbedtls_svc_key_id_t *key)
{
	(void)attr, (void)data, (void)len, (void)key;
	return PSA_ERROR_NOT_SUPPORTED;
}
psa_status_t psa_verify_hash(mbedtls_svc_key_id_t key, psa_algorithm_t alg, const uint8_t *hash,
			     size_t hash_len, const uint8_t *sig, size_t sig_len)
{
	(void)key, (void)alg, (void)hash, (void)hash_len, (void)sig, (void)sig_len;
	return PSA_ERROR_NOT_SUPPORTED;
}
psa_status_t psa_destroy_key(mbedtls_svc_key_id_t key)
{
	(void)key;
	return PSA_SUCCESS;
}

static struct cf_device device;
static uint8_t bundle[CF_BUNDLE_MAX_BYTES];
static char json[CF_REPORT_JSON_MAX];
#endif

int main(void)
{
#ifndef BASELINE
	volatile struct cf_device_ports ports;
	struct cf_signer signer = {0};
	uint32_t tag = 42;
	size_t len = 0;

	cf_device_init(&device, "d", (const struct cf_device_ports *)&ports);
	cf_device_provision(&device, &signer, 1, &tag, 1);
	cf_device_provision_identity(&device, 44);
	cf_device_boot(&device);
	cf_device_handle(&device, bundle, sizeof(bundle));
	cf_device_tick(&device);
	cf_report_json(&device.report, device.device_id, json, sizeof(json), &len);
	cf_state_json(device.device_id, 0, NULL, 0, &tag, 1, &tag, json, sizeof(json), &len);
#endif
	return 0;
}
