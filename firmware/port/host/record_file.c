/*
 * The host record: one file replaced by write, fsync and rename, so a power cut leaves
 * the old record or the new one, as NVS does on the device.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "host_ports.h"

static int record_load(void *ctx, uint8_t *buf, size_t len, size_t *out_len)
{
	const struct cf_host_record *record = ctx;
	FILE *f = fopen(record->path, "rb");

	if (f == NULL) {
		return -ENOENT;
	}
	*out_len = fread(buf, 1, len, f);
	fclose(f);
	return 0;
}

static int record_store(void *ctx, const uint8_t *buf, size_t len)
{
	const struct cf_host_record *record = ctx;
	char tmp[CF_HOST_PATH_MAX + 8];

	snprintf(tmp, sizeof(tmp), "%s.tmp", record->path);
	FILE *f = fopen(tmp, "wb");
	if (f == NULL) {
		return -EIO;
	}
	bool ok = fwrite(buf, 1, len, f) == len && fflush(f) == 0 && fsync(fileno(f)) == 0;
	fclose(f);
	if (!ok || rename(tmp, record->path) != 0) {
		unlink(tmp);
		return -EIO;
	}
	return 0;
}

int cf_host_record_init(struct cf_host_record *record, const char *path)
{
	if (strlen(path) >= sizeof(record->path)) {
		return -ENAMETOOLONG;
	}
	strcpy(record->path, path);
	return 0;
}

struct cf_record_store cf_host_record_port(struct cf_host_record *record)
{
	return (struct cf_record_store){record, record_load, record_store};
}

static uint64_t system_now(void *ctx)
{
	(void)ctx;
	return (uint64_t)time(NULL);
}

struct cf_clock cf_host_clock(void)
{
	return (struct cf_clock){NULL, system_now};
}
