/*
 * Ports for the device tests: the host port's file key store and record (the modem's
 * rules, write-then-rename) wrapped so that power can be cut before the Nth call that
 * changes something, and a settable clock, probe and transport.
 */
#ifndef CF_TEST_FAKE_PORTS_H_
#define CF_TEST_FAKE_PORTS_H_

#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>

#include "certfleet/device.h"
#include "host_ports.h"

#define FAKE_REPORTS_MAX 32

struct fake_world {
	char dir[64];		/* key store items and the record live here */
	struct cf_host_keystore keystore;
	struct cf_host_record record;
	bool online;		/* the key store's link, mirrored after each call */
	int steps;		/* port calls that change something, so far */
	int cut_at;		/* cut power before this step (0: never) */
	int fail_at;		/* this step fails with -EIO instead (0: never) */
	jmp_buf *power_cut;	/* where a cut returns to */
	uint64_t now;
	enum cf_reason probe_result;
	bool tls_broker;	/* the broker connection is TLS: commits are proven on it */
	int reconnect_result;	/* what a reconnect with a new list gives */
	int publish_result;	/* what publishing gives (0: acknowledged) */
	int writes_refused;	/* errno the key store gives every write, 0 for none */
	int keygen_refused;	/* errno the modem gives every keygen, 0 for none */
	bool fixed_key;		/* keygen makes tests/vectors/bundles/identity-key.pem */
	bool identity_refused;	/* the probe's server refuses any client certificate */
	uint32_t broker_refuses; /* the broker refuses this identity tag (0: none) */
	const uint32_t *last_identity; /* what the last reconnect presented (NULL: none) */
	uint32_t last_identity_tag;
	char csr[CF_CSR_FIELD_MAX_BYTES + 1]; /* the last `csr` report's field */
	struct cf_report reports[FAKE_REPORTS_MAX];
	size_t n_reports;
};

/** A world with an empty key store in a fresh directory under the working directory. */
void fake_world_init(struct fake_world *world);
/** Remove the world's files. */
void fake_world_free(struct fake_world *world);
/** The ports over `world`. */
struct cf_device_ports fake_ports(struct fake_world *world);
/** Put an item into the key store (factory provisioning, offline then online). */
void fake_keystore_put(struct fake_world *world, uint32_t tag, uint8_t type, const char *pem);
/** Whether the key store holds an item. */
bool fake_keystore_has(struct fake_world *world, uint32_t tag, uint8_t type);
/** The last report published. */
const struct cf_report *fake_last_report(const struct fake_world *world);

#endif /* CF_TEST_FAKE_PORTS_H_ */
