/* A provisioned test device on fake ports: tag 42 holds the CA, signer "signer" trusted. */
#ifndef CF_TEST_DEVICE_HARNESS_H_
#define CF_TEST_DEVICE_HARNESS_H_

#include "certfleet/device.h"
#include "fake_ports.h"
#include "fixtures.h"

#define ACTIVE_TAG 42
#define SPARE_TAG 43
#define IDENTITY_TAG 44	    /* the spare identity tag the i-* bundles make a key in */
#define OLD_IDENTITY_TAG 45 /* the identity harness_provision_identity gives */

struct harness {
	struct fixture_context ctx;
	char factory_ca[4097]; /* tests/vectors/bundles/factory-ca.pem */
	struct fake_world world;
	struct cf_device dev;
	uint8_t buf[FIXTURE_MAX];
};

/** Provision a device: record with last_seq from CONTEXT, key store with the CA in 42. */
void harness_init(struct harness *h, bool tls_broker);
/** Give the device its factory identity in 45 (old-identity*.pem); keygen makes the
 * fixed key of identity-key.pem, which the i-stage certificate certifies. */
void harness_provision_identity(struct harness *h);
/** Rebuild the device from its record and key store, as after a power-up, and boot it. */
void harness_reboot(struct harness *h);
/** Hand the device a fixture bundle; returns what cf_device_handle returned. */
int harness_send(struct harness *h, const char *name);
/** Assert the invariants of contract v2: 1..7 distinct active tags, each holding a CA
 * (6 with an identity), and an identity tag, if any, outside them holding a client
 * certificate and key. */
void harness_assert_trust_works(struct harness *h);

#endif /* CF_TEST_DEVICE_HARNESS_H_ */
