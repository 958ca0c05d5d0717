/* Port fakes; see fake_ports.h. */
#include <dirent.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "fake_ports.h"

/* Count a step; cut power before it, or say it fails. */
static bool step(struct fake_world *w)
{
	w->steps++;
	if (w->cut_at != 0 && w->steps == w->cut_at) {
		/* after the reboot the device brings the modem up online */
		w->online = w->keystore.online = true;
		longjmp(*w->power_cut, 1);
	}
	return w->fail_at != 0 && w->steps == w->fail_at;
}

static int ks_set_online(void *ctx, bool online)
{
	struct fake_world *w = ctx;
	if (step(w)) {
		return -EIO;
	}
	w->online = online;
	return cf_host_keystore_port(&w->keystore).set_online(&w->keystore, online);
}

static int ks_write(void *ctx, uint32_t tag, uint8_t type, const uint8_t *data, size_t len)
{
	struct fake_world *w = ctx;
	if (step(w)) {
		return -EIO;
	}
	if (w->writes_refused != 0 && !w->keystore.online) {
		return -w->writes_refused;
	}
	return cf_host_keystore_port(&w->keystore).write(&w->keystore, tag, type, data, len);
}

static int ks_remove(void *ctx, uint32_t tag, uint8_t type)
{
	struct fake_world *w = ctx;
	if (!fake_keystore_has(w, tag, type)) {
		return w->keystore.online ? -EPERM : -ENOENT; /* changes nothing: not a step */
	}
	if (step(w)) {
		return -EIO;
	}
	return cf_host_keystore_port(&w->keystore).remove(&w->keystore, tag, type);
}

static int ks_exists(void *ctx, uint32_t tag, uint8_t type, bool *exists)
{
	struct fake_world *w = ctx;
	return cf_host_keystore_port(&w->keystore).exists(&w->keystore, tag, type, exists);
}

static int ks_digest(void *ctx, uint32_t tag, uint8_t type, uint8_t digest[32])
{
	struct fake_world *w = ctx;
	return cf_host_keystore_port(&w->keystore).digest(&w->keystore, tag, type, digest);
}

static int ks_keygen(void *ctx, uint32_t tag, const char *subject, size_t subject_len,
		     uint64_t seq, char *out, size_t len, size_t *out_len)
{
	struct fake_world *w = ctx;
	if (step(w)) {
		return -EIO;
	}
	if (w->keygen_refused != 0 && !w->keystore.online) {
		return -w->keygen_refused;
	}
	if (!w->fixed_key) {
		return cf_host_keystore_keygen(&w->keystore, tag, subject, subject_len, seq, out, len,
					       out_len);
	}
	char path[512];
	mbedtls_pk_context key;
	mbedtls_pk_init(&key);
	snprintf(path, sizeof(path), "%s/bundles/identity-key.pem", CF_TEST_VECTORS);
	assert_int_equal(mbedtls_pk_parse_keyfile(&key, path, NULL), 0);
	int err = cf_host_keystore_keygen_with(&w->keystore, tag, subject, subject_len, seq, &key,
					       out, len, out_len);
	mbedtls_pk_free(&key);
	return err;
}

static int record_load(void *ctx, uint8_t *buf, size_t len, size_t *out_len)
{
	struct fake_world *w = ctx;
	return cf_host_record_port(&w->record).load(&w->record, buf, len, out_len);
}

static int record_store(void *ctx, const uint8_t *buf, size_t len)
{
	struct fake_world *w = ctx;
	if (step(w)) {
		return -EIO;
	}
	return cf_host_record_port(&w->record).store(&w->record, buf, len);
}

static uint64_t clock_now(void *ctx)
{
	return ((struct fake_world *)ctx)->now;
}

static enum cf_reason probe_run(void *ctx, const char *host, size_t host_len, uint16_t port,
				const uint32_t *tags, size_t n_tags, const uint32_t *client_tag)
{
	struct fake_world *w = ctx;
	(void)host, (void)port;
	assert_true(host_len > 0);
	if (client_tag != NULL && (!fake_keystore_has(w, *client_tag, 1) ||
				   !fake_keystore_has(w, *client_tag, 2) || w->identity_refused)) {
		return CF_REASON_IDENTITY_REFUSED;
	}
	/* the probe trusts only its sec_tags: each must hold a CA chain */
	for (size_t i = 0; i < n_tags; i++) {
		if (!fake_keystore_has(w, tags[i], 0)) {
			return CF_REASON_UNKNOWN_CA;
		}
	}
	return w->probe_result;
}

static int publish_report(void *ctx, const struct cf_report *report)
{
	struct fake_world *w = ctx;
	if (w->publish_result != 0) {
		return w->publish_result;
	}
	assert_true(w->n_reports < FAKE_REPORTS_MAX);
	w->reports[w->n_reports++] = *report;
	if (report->csr != NULL) {
		assert_true(strlen(report->csr) <= CF_CSR_FIELD_MAX_BYTES);
		strcpy(w->csr, report->csr);
		w->reports[w->n_reports - 1].csr = w->csr;
	}
	return 0;
}

static int reconnect(void *ctx, const uint32_t *tags, size_t n_tags, const uint32_t *identity)
{
	struct fake_world *w = ctx;
	w->last_identity = identity != NULL ? &w->last_identity_tag : NULL;
	w->last_identity_tag = identity != NULL ? *identity : 0;
	for (size_t i = 0; i < n_tags; i++) {
		if (!fake_keystore_has(w, tags[i], 0)) {
			return -ECONNREFUSED;
		}
	}
	if (identity != NULL && (!fake_keystore_has(w, *identity, 1) ||
				 !fake_keystore_has(w, *identity, 2) || w->broker_refuses == *identity)) {
		return -ECONNREFUSED;
	}
	return w->reconnect_result;
}

void fake_world_init(struct fake_world *world)
{
	char path[128];
	memset(world, 0, sizeof(*world));
	/* Under TMPDIR (or /tmp), never in the source tree, whatever the working directory. */
	const char *tmp = getenv("TMPDIR");
	if (tmp == NULL || tmp[0] == '\0' || strlen(tmp) > sizeof(world->dir) - 16) {
		tmp = "/tmp";
	}
	snprintf(world->dir, sizeof(world->dir), "%s/cf-test-XXXXXX", tmp);
	assert_non_null(mkdtemp(world->dir));
	snprintf(path, sizeof(path), "%s/keystore", world->dir);
	assert_int_equal(cf_host_keystore_init(&world->keystore, path), 0);
	snprintf(path, sizeof(path), "%s/record", world->dir);
	assert_int_equal(cf_host_record_init(&world->record, path), 0);
	world->online = world->keystore.online = true;
	world->probe_result = CF_REASON_OK;
}

static void remove_tree(const char *path)
{
	DIR *dir = opendir(path);
	struct dirent *entry;
	char child[512];
	if (dir == NULL) {
		unlink(path);
		return;
	}
	while ((entry = readdir(dir)) != NULL) {
		if (strcmp(entry->d_name, ".") != 0 && strcmp(entry->d_name, "..") != 0) {
			snprintf(child, sizeof(child), "%s/%s", path, entry->d_name);
			remove_tree(child);
		}
	}
	closedir(dir);
	rmdir(path);
}

void fake_world_free(struct fake_world *world)
{
	remove_tree(world->dir);
}

struct cf_device_ports fake_ports(struct fake_world *w)
{
	return (struct cf_device_ports){
		.keystore = {w, ks_set_online, ks_write, ks_remove, ks_exists, ks_digest, ks_keygen},
		.record = {w, record_load, record_store},
		.clock = {w, clock_now},
		.probe = {w, probe_run},
		.transport = {w, publish_report, w->tls_broker ? reconnect : NULL},
	};
}

void fake_keystore_put(struct fake_world *world, uint32_t tag, uint8_t type, const char *pem)
{
	struct cf_keystore port = cf_host_keystore_port(&world->keystore);
	assert_int_equal(port.set_online(port.ctx, false), 0);
	assert_int_equal(port.write(port.ctx, tag, type, (const uint8_t *)pem, strlen(pem)), 0);
	assert_int_equal(port.set_online(port.ctx, true), 0);
}

bool fake_keystore_has(struct fake_world *world, uint32_t tag, uint8_t type)
{
	bool exists = false;
	ks_exists(world, tag, type, &exists);
	return exists;
}

const struct cf_report *fake_last_report(const struct fake_world *world)
{
	assert_true(world->n_reports > 0);
	return &world->reports[world->n_reports - 1];
}
