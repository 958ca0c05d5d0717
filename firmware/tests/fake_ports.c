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

static void step(struct fake_world *w)
{
	w->steps++;
	if (w->cut_at != 0 && w->steps == w->cut_at) {
		w->online = true; /* after the reboot the modem comes up online */
		longjmp(*w->power_cut, 1);
	}
}

static void item_path(const struct fake_world *w, uint32_t tag, uint8_t type, char *out, size_t len)
{
	snprintf(out, len, "%s/item-%u-%u", w->dir, (unsigned)tag, (unsigned)type);
}

static int ks_set_online(void *ctx, bool online)
{
	struct fake_world *w = ctx;
	step(w);
	w->online = online;
	return 0;
}

static int ks_write(void *ctx, uint32_t tag, uint8_t type, const uint8_t *data, size_t len)
{
	struct fake_world *w = ctx;
	char path[128];
	step(w);
	item_path(w, tag, type, path, sizeof(path));
	if (w->online) {
		return -EPERM;
	}
	if (access(path, F_OK) == 0) {
		return -EALREADY;
	}
	if (w->writes_refused != 0) {
		return -w->writes_refused;
	}
	if (len > 4096 || len < 10 || memcmp(data, "-----BEGIN", 10) != 0) {
		return -EINVAL; /* the modem refuses what is not PEM or over its limit */
	}
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	fclose(f);
	return 0;
}

static int ks_remove(void *ctx, uint32_t tag, uint8_t type)
{
	struct fake_world *w = ctx;
	char path[128];
	item_path(w, tag, type, path, sizeof(path));
	if (access(path, F_OK) != 0) {
		return w->online ? -EPERM : -ENOENT;
	}
	step(w);
	if (w->online) {
		return -EPERM;
	}
	assert_int_equal(unlink(path), 0);
	return 0;
}

static int ks_exists(void *ctx, uint32_t tag, uint8_t type, bool *exists)
{
	struct fake_world *w = ctx;
	char path[128];
	item_path(w, tag, type, path, sizeof(path));
	*exists = access(path, F_OK) == 0;
	return 0;
}

static int ks_digest(void *ctx, uint32_t tag, uint8_t type, uint8_t digest[32])
{
	(void)ctx, (void)tag, (void)type, (void)digest;
	return -ENOTSUP;
}

static int record_load(void *ctx, uint8_t *buf, size_t len, size_t *out_len)
{
	struct fake_world *w = ctx;
	char path[128];
	snprintf(path, sizeof(path), "%s/record", w->dir);
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		return -ENOENT;
	}
	*out_len = fread(buf, 1, len, f);
	fclose(f);
	return 0;
}

static int record_store(void *ctx, const uint8_t *buf, size_t len)
{
	struct fake_world *w = ctx;
	char path[128], tmp[128];
	step(w);
	snprintf(path, sizeof(path), "%s/record", w->dir);
	snprintf(tmp, sizeof(tmp), "%s/record.tmp", w->dir);
	FILE *f = fopen(tmp, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(buf, 1, len, f), len);
	fclose(f);
	assert_int_equal(rename(tmp, path), 0);
	return 0;
}

static uint64_t clock_now(void *ctx)
{
	return ((struct fake_world *)ctx)->now;
}

static enum cf_reason probe_run(void *ctx, const char *host, size_t host_len, uint16_t port,
				const uint32_t *tags, size_t n_tags)
{
	struct fake_world *w = ctx;
	(void)host, (void)port;
	assert_true(host_len > 0);
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
	return 0;
}

static int reconnect(void *ctx, const uint32_t *tags, size_t n_tags)
{
	struct fake_world *w = ctx;
	for (size_t i = 0; i < n_tags; i++) {
		if (!fake_keystore_has(w, tags[i], 0)) {
			return -ECONNREFUSED;
		}
	}
	return w->reconnect_result;
}

void fake_world_init(struct fake_world *world)
{
	memset(world, 0, sizeof(*world));
	snprintf(world->dir, sizeof(world->dir), "cf-test-XXXXXX");
	assert_non_null(mkdtemp(world->dir));
	world->online = true;
	world->probe_result = CF_REASON_OK;
}

void fake_world_free(struct fake_world *world)
{
	DIR *dir = opendir(world->dir);
	struct dirent *entry;
	char path[512];
	assert_non_null(dir);
	while ((entry = readdir(dir)) != NULL) {
		if (entry->d_name[0] != '.') {
			snprintf(path, sizeof(path), "%s/%s", world->dir, entry->d_name);
			unlink(path);
		}
	}
	closedir(dir);
	rmdir(world->dir);
}

struct cf_device_ports fake_ports(struct fake_world *w)
{
	return (struct cf_device_ports){
		.keystore = {w, ks_set_online, ks_write, ks_remove, ks_exists, ks_digest},
		.record = {w, record_load, record_store},
		.clock = {w, clock_now},
		.probe = {w, probe_run},
		.transport = {w, publish_report, w->tls_broker ? reconnect : NULL},
	};
}

void fake_keystore_put(struct fake_world *world, uint32_t tag, uint8_t type, const char *pem)
{
	char path[128];
	item_path(world, tag, type, path, sizeof(path));
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	fputs(pem, f);
	fclose(f);
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
