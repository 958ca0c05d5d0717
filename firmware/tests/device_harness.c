/* See device_harness.h. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "device_harness.h"

void harness_init(struct harness *h, bool tls_broker)
{
	const uint32_t active[] = {ACTIVE_TAG};
	memset(h, 0, sizeof(*h));
	fixture_context(&h->ctx);
	fake_world_init(&h->world);
	assert_int_equal(cf_host_keystore_attestation(&h->world.keystore, h->ctx.device_id,
						      CF_HOST_FLEET_SEED), 0);
	h->world.now = h->ctx.now;
	h->world.tls_broker = tls_broker;
	char path[512];
	snprintf(path, sizeof(path), "%s/bundles/factory-ca.pem", CF_TEST_VECTORS);
	fixture_read(path, (uint8_t *)h->factory_ca, sizeof(h->factory_ca) - 1);
	fake_keystore_put(&h->world, ACTIVE_TAG, 0, h->factory_ca);
	struct cf_device_ports ports = fake_ports(&h->world);
	assert_int_equal(cf_device_init(&h->dev, h->ctx.device_id, &ports), -ENOENT);
	assert_int_equal(cf_device_provision(&h->dev, h->ctx.keys, 1, active, 1), 0);
	h->dev.state.last_seq = h->ctx.last_seq;
	assert_int_equal(cf_device_persist(&h->dev), 0);
}

void harness_provision_identity(struct harness *h)
{
	static char pem[4097];
	char path[512];
	const char *files[] = {"old-identity.pem", "old-identity-key.pem"};

	for (uint8_t type = 1; type <= 2; type++) {
		snprintf(path, sizeof(path), "%s/bundles/%s", CF_TEST_VECTORS, files[type - 1]);
		memset(pem, 0, sizeof(pem));
		fixture_read(path, (uint8_t *)pem, sizeof(pem) - 1);
		fake_keystore_put(&h->world, OLD_IDENTITY_TAG, type, pem);
	}
	assert_int_equal(cf_device_provision_identity(&h->dev, OLD_IDENTITY_TAG), 0);
	h->world.fixed_key = true;
}

void harness_reboot(struct harness *h)
{
	struct cf_device_ports ports = fake_ports(&h->world);
	assert_int_equal(cf_device_init(&h->dev, h->ctx.device_id, &ports), 0);
	assert_int_equal(cf_device_boot(&h->dev), 0);
}

int harness_send(struct harness *h, const char *name)
{
	size_t len = fixture_bundle(name, h->buf, sizeof(h->buf));
	return cf_device_handle(&h->dev, h->buf, len);
}

void harness_assert_trust_works(struct harness *h)
{
	const struct cf_state *st = &h->dev.state;
	assert_in_range(st->n_active, 1, st->has_identity ? CF_TAG_LIST_MAX - 1 : CF_TAG_LIST_MAX);
	if (st->has_identity) {
		for (size_t i = 0; i < st->n_active; i++) {
			assert_int_not_equal(st->active[i], st->identity_tag);
		}
		if (!fake_keystore_has(&h->world, st->identity_tag, 1) ||
		    !fake_keystore_has(&h->world, st->identity_tag, 2)) {
			fail_msg("identity sec_tag %u lacks its certificate or key",
				 (unsigned)st->identity_tag);
		}
	}
	for (size_t i = 0; i < st->n_active; i++) {
		for (size_t j = 0; j < i; j++) {
			assert_int_not_equal(st->active[i], st->active[j]);
		}
		if (!fake_keystore_has(&h->world, st->active[i], 0)) {
			fail_msg("active sec_tag %u holds no CA chain", (unsigned)st->active[i]);
		}
	}
	assert_int_equal(st->n_pending_delete, 0);
	assert_true(h->world.online);
}
