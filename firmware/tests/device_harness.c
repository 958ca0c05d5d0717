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
	assert_in_range(st->n_active, 1, CF_TAG_LIST_MAX);
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
