/*
 * The host key store: a directory with one file per (sec_tag, type), refusing what the
 * nRF9160 refuses, with its errno: a change while online (-EPERM), a taken slot
 * (-EALREADY), a full store (-ENOMEM), empty content, a CA chain over 4096 bytes or a
 * certificate type that does not parse as PEM X.509 (-EINVAL). A write lands whole or
 * not at all (temporary file, then rename), as a modem's does across a power cut.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mbedtls/platform_util.h>
#include <mbedtls/x509_crt.h>
#include <psa/crypto.h>

#include "host_ports.h"

#define ITEM_MAX_BYTES 8192

static bool is_certificate(uint8_t type)
{
	return type == 0 || type == 1;
}

static int item_path(const struct cf_host_keystore *ks, uint32_t tag, uint8_t type, char *out,
		     size_t len)
{
	int n = snprintf(out, len, "%s/%u-%u", ks->dir, (unsigned)tag, (unsigned)type);
	return n > 0 && (size_t)n < len ? 0 : -ENAMETOOLONG;
}

static int slot_valid(uint32_t tag, uint8_t type)
{
	return tag <= CF_SEC_TAG_MAX && type <= CF_CRED_TYPE_MAX ? 0 : -EINVAL;
}

static int read_file(const char *path, uint8_t *buf, size_t len, size_t *out_len)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		return -ENOENT;
	}
	size_t n = fread(buf, 1, len, f);
	int more = fgetc(f) != EOF;
	fclose(f);
	if (more) {
		return -ENOMEM;
	}
	*out_len = n;
	return 0;
}

/* The earliest notAfter of a PEM chain, or 0 when it does not parse. */
static uint64_t chain_not_after(const uint8_t *pem, size_t len)
{
	static _Thread_local uint8_t text[ITEM_MAX_BYTES + 1];
	mbedtls_x509_crt chain;
	uint64_t earliest = 0;

	if (len > ITEM_MAX_BYTES) {
		return 0;
	}
	memcpy(text, pem, len);
	text[len] = '\0'; /* Mbed TLS parses PEM from a NUL-terminated buffer */
	mbedtls_x509_crt_init(&chain);
	if (mbedtls_x509_crt_parse(&chain, text, len + 1) == 0) {
		for (const mbedtls_x509_crt *crt = &chain; crt != NULL && crt->raw.len > 0;
		     crt = crt->next) {
			const mbedtls_x509_time *t = &crt->valid_to;
			/* days from civil (H. Hinnant), then seconds */
			int y = t->year - (t->mon <= 2);
			int era = (y >= 0 ? y : y - 399) / 400;
			int yoe = y - era * 400;
			int doy = (153 * (t->mon + (t->mon > 2 ? -3 : 9)) + 2) / 5 + t->day - 1;
			int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
			int64_t days = (int64_t)era * 146097 + doe - 719468;
			int64_t secs = days * 86400 + t->hour * 3600 + t->min * 60 + t->sec;
			if (secs > 0 && (earliest == 0 || (uint64_t)secs < earliest)) {
				earliest = (uint64_t)secs;
			}
		}
	}
	mbedtls_x509_crt_free(&chain);
	return earliest;
}

static size_t used_bytes(const struct cf_host_keystore *ks)
{
	DIR *dir = opendir(ks->dir);
	struct dirent *entry;
	size_t used = 0;
	char path[CF_HOST_PATH_MAX + 32];
	struct stat st;

	while (dir != NULL && (entry = readdir(dir)) != NULL) {
		unsigned tag, type;
		char tail;
		if (sscanf(entry->d_name, "%u-%u%c", &tag, &type, &tail) == 2 &&
		    item_path(ks, tag, (uint8_t)type, path, sizeof(path)) == 0 &&
		    stat(path, &st) == 0) {
			used += (size_t)st.st_size;
		}
	}
	if (dir != NULL) {
		closedir(dir);
	}
	return used;
}

static int ks_set_online(void *ctx, bool online)
{
	((struct cf_host_keystore *)ctx)->online = online;
	return 0;
}

static int ks_write(void *ctx, uint32_t tag, uint8_t type, const uint8_t *data, size_t len)
{
	struct cf_host_keystore *ks = ctx;
	char path[CF_HOST_PATH_MAX + 32], tmp[CF_HOST_PATH_MAX + 40];
	int err = slot_valid(tag, type);

	if (err == 0) {
		err = item_path(ks, tag, type, path, sizeof(path));
	}
	if (err != 0) {
		return err;
	}
	if (ks->online) {
		return -EPERM;
	}
	if (len == 0 || len > ITEM_MAX_BYTES || (type == 0 && len > CF_CA_CHAIN_MAX_BYTES)) {
		return -EINVAL;
	}
	if (access(path, F_OK) == 0) {
		return -EALREADY;
	}
	if (used_bytes(ks) + len > ks->capacity) {
		return -ENOMEM;
	}
	if (is_certificate(type) && chain_not_after(data, len) == 0) {
		return -EINVAL;
	}
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	FILE *f = fopen(tmp, "wb");
	if (f == NULL) {
		return -EIO;
	}
	bool ok = fwrite(data, 1, len, f) == len && fflush(f) == 0 && fsync(fileno(f)) == 0;
	fclose(f);
	if (!ok || rename(tmp, path) != 0) {
		unlink(tmp);
		return -EIO;
	}
	return 0;
}

static int ks_remove(void *ctx, uint32_t tag, uint8_t type)
{
	struct cf_host_keystore *ks = ctx;
	char path[CF_HOST_PATH_MAX + 32];
	int err = slot_valid(tag, type);

	if (err == 0) {
		err = item_path(ks, tag, type, path, sizeof(path));
	}
	if (err != 0) {
		return err;
	}
	if (ks->online) {
		return -EPERM;
	}
	return unlink(path) == 0 ? 0 : -ENOENT;
}

static int ks_exists(void *ctx, uint32_t tag, uint8_t type, bool *exists)
{
	char path[CF_HOST_PATH_MAX + 32];
	int err = slot_valid(tag, type);

	if (err == 0) {
		err = item_path(ctx, tag, type, path, sizeof(path));
	}
	*exists = err == 0 && access(path, F_OK) == 0;
	return err;
}

/*
 * What a key item's digest covers: its public SubjectPublicKeyInfo DER (the modem's
 * %CMNG=1 of a made key), never private bytes. 0 with *out, or -EINVAL when `content`
 * is no key (then the content itself is hashed, as for any other item).
 */
static int key_public_der(uint8_t *content, size_t len, const uint8_t **out, size_t *out_len)
{
	static _Thread_local uint8_t text[ITEM_MAX_BYTES + 1];
	mbedtls_pk_context pk;
	int der_len;

	memcpy(text, content, len);
	text[len] = '\0';
	mbedtls_pk_init(&pk);
	if (mbedtls_pk_parse_key(&pk, text, len + 1, NULL, 0) == 0 &&
	    (der_len = mbedtls_pk_write_pubkey_der(&pk, content, ITEM_MAX_BYTES)) > 0) {
		*out = content + ITEM_MAX_BYTES - der_len;
		*out_len = (size_t)der_len;
	} else {
		der_len = -1;
	}
	mbedtls_pk_free(&pk);
	mbedtls_platform_zeroize(text, sizeof(text));
	return der_len > 0 ? 0 : -EINVAL;
}

static int ks_digest(void *ctx, uint32_t tag, uint8_t type, uint8_t digest[32])
{
	static _Thread_local uint8_t content[ITEM_MAX_BYTES];
	const uint8_t *hashed = content;
	char path[CF_HOST_PATH_MAX + 32];
	size_t len = 0, digest_len = 0;
	int err = slot_valid(tag, type);

	if (err == 0) {
		err = item_path(ctx, tag, type, path, sizeof(path));
	}
	if (err == 0) {
		err = read_file(path, content, sizeof(content), &len);
	}
	if (err != 0) {
		return err;
	}
	if (type == CF_CRED_TYPE_CLIENT_KEY) {
		key_public_der(content, len, &hashed, &len);
	}
	err = psa_crypto_init() != PSA_SUCCESS ||
			      psa_hash_compute(PSA_ALG_SHA_256, hashed, len, digest, 32, &digest_len) !=
				      PSA_SUCCESS
		      ? -EIO
		      : 0;
	mbedtls_platform_zeroize(content, sizeof(content));
	return err;
}

int cf_host_keystore_init(struct cf_host_keystore *ks, const char *dir)
{
	memset(ks, 0, sizeof(*ks));
	if (strlen(dir) >= sizeof(ks->dir)) {
		return -ENAMETOOLONG;
	}
	strcpy(ks->dir, dir);
	ks->capacity = CF_HOST_KEYSTORE_CAPACITY;
	strcpy(ks->fleet_seed, CF_HOST_FLEET_SEED);
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		return -errno;
	}
	return 0;
}

struct cf_keystore cf_host_keystore_port(struct cf_host_keystore *ks)
{
	return (struct cf_keystore){ks,	       ks_set_online, ks_write, ks_remove,
				    ks_exists, ks_digest,     cf_host_keystore_keygen};
}

int cf_host_keystore_attestation(struct cf_host_keystore *ks, const char *device_id,
				 const char *fleet_seed)
{
	if (strlen(device_id) > CF_DEVICE_ID_MAX || strlen(fleet_seed) > CF_HOST_SEED_MAX) {
		return -ENAMETOOLONG;
	}
	strcpy(ks->device_id, device_id);
	strcpy(ks->fleet_seed, fleet_seed);
	return 0;
}

int cf_host_keystore_item_path(const struct cf_host_keystore *ks, uint32_t sec_tag, uint8_t type,
			       char *out, size_t len)
{
	int err = slot_valid(sec_tag, type);

	if (err == 0) {
		err = item_path(ks, sec_tag, type, out, len);
	}
	return err != 0 ? err : access(out, F_OK) == 0 ? 0 : -ENOENT;
}

int cf_host_keystore_read(struct cf_host_keystore *ks, uint32_t sec_tag, uint8_t type,
			  uint8_t *buf, size_t len, size_t *out_len)
{
	char path[CF_HOST_PATH_MAX + 32];
	int err = slot_valid(sec_tag, type);

	if (err == 0) {
		err = item_path(ks, sec_tag, type, path, sizeof(path));
	}
	if (err != 0) {
		return err;
	}
	if (!is_certificate(type)) {
		return -EPERM;
	}
	return read_file(path, buf, len, out_len);
}

static int item_order(const void *a, const void *b)
{
	const struct cf_state_item *x = a, *y = b;
	if (x->sec_tag != y->sec_tag) {
		return x->sec_tag < y->sec_tag ? -1 : 1;
	}
	return (int)x->type - (int)y->type;
}

int cf_host_keystore_list(struct cf_host_keystore *ks, struct cf_state_item *items, size_t max,
			  size_t *n)
{
	static _Thread_local uint8_t content[ITEM_MAX_BYTES];
	DIR *dir = opendir(ks->dir);
	struct dirent *entry;
	int err = 0;

	*n = 0;
	if (dir == NULL) {
		return -errno;
	}
	while (err == 0 && (entry = readdir(dir)) != NULL) {
		unsigned tag, type;
		char tail;
		if (sscanf(entry->d_name, "%u-%u%c", &tag, &type, &tail) != 2) {
			continue; /* ".", "..", a leftover temporary file */
		}
		if (*n == max) {
			err = -ENOSPC;
			break;
		}
		struct cf_state_item *item = &items[(*n)++];
		memset(item, 0, sizeof(*item));
		item->sec_tag = tag;
		item->type = (uint8_t)type;
		err = ks_digest(ks, tag, (uint8_t)type, item->sha256);
		if (err == 0 && is_certificate((uint8_t)type)) {
			char path[CF_HOST_PATH_MAX + 32];
			size_t len = 0;
			item_path(ks, tag, (uint8_t)type, path, sizeof(path));
			err = read_file(path, content, sizeof(content), &len);
			item->not_after = err == 0 ? chain_not_after(content, len) : 0;
		}
	}
	closedir(dir);
	qsort(items, *n, sizeof(items[0]), item_order);
	return err;
}
