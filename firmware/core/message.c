/*
 * JSON for the report and state messages. A small writer that appends into the
 * caller's buffer and remembers overflow, so each message is one straight sequence
 * of appends and one check at the end.
 */
#include <errno.h>
#include <string.h>

#include "certfleet/message.h"

struct writer {
	char *buf;
	size_t len;
	size_t at;
	int err;
};

static void put(struct writer *w, const char *data, size_t n)
{
	if (w->err == 0 && w->len - w->at < n) {
		w->err = -ENOSPC;
	}
	if (w->err == 0) {
		memcpy(w->buf + w->at, data, n);
		w->at += n;
	}
}

static void put_str(struct writer *w, const char *text)
{
	put(w, text, strlen(text));
}

static void put_uint(struct writer *w, uint64_t value)
{
	char digits[20];
	size_t n = 0;

	do {
		digits[sizeof(digits) - 1 - n++] = (char)('0' + value % 10);
		value /= 10;
	} while (value != 0);
	put(w, digits + sizeof(digits) - n, n);
}

/* A JSON string: quotes, backslash and control characters escaped, UTF-8 as is. */
static void put_json_string(struct writer *w, const char *text, size_t n)
{
	static const char hex[] = "0123456789abcdef";

	put(w, "\"", 1);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)text[i];
		if (c == '"' || c == '\\') {
			const char escaped[2] = {'\\', (char)c};
			put(w, escaped, 2);
		} else if (c < 0x20) {
			const char escaped[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
			put(w, escaped, 6);
		} else {
			put(w, (const char *)&c, 1);
		}
	}
	put(w, "\"", 1);
}

static void put_key(struct writer *w, const char *key)
{
	put_str(w, w->at > 1 ? ",\"" : "\"");
	put_str(w, key);
	put(w, "\":", 2);
}

static void put_time(struct writer *w, uint64_t epoch)
{
	char text[21];

	cf_rfc3339(epoch, text);
	put_json_string(w, text, 20);
}

static void put_tags(struct writer *w, const uint32_t *tags, size_t n)
{
	put(w, "[", 1);
	for (size_t i = 0; i < n; i++) {
		if (i > 0) {
			put(w, ",", 1);
		}
		put_uint(w, tags[i]);
	}
	put(w, "]", 1);
}

static int finish(struct writer *w, size_t *out_len)
{
	put(w, "}", 1);
	*out_len = w->at;
	return w->err;
}

/* Days since 1970-01-01 to a civil date (proleptic Gregorian; H. Hinnant's algorithm). The
 * year is written modulo 10000, so only the 400-year era modulo 25 matters: past the two
 * 64-bit divisions everything is 32-bit (a third of the code on a Cortex-M33). */
void cf_rfc3339(uint64_t epoch, char out[21])
{
	const uint64_t z = epoch / 86400 + 719468, era = z / 146097;
	const uint32_t secs = (uint32_t)(epoch % 86400), doe = (uint32_t)(z - era * 146097);
	const uint32_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	const uint32_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
	const uint32_t day = doy - (153 * mp + 2) / 5 + 1, month = mp < 10 ? mp + 3 : mp - 9;
	const uint32_t year = yoe + (uint32_t)(era % 25) * 400 + (month <= 2);
	const uint32_t fields[6] = {year % 10000, month, day, secs / 3600, secs / 60 % 60, secs % 60};
	static const char separators[6] = {'-', '-', 'T', ':', ':', 'Z'};
	size_t at = 0;

	for (size_t i = 0; i < 6; i++) {
		for (uint32_t width = i == 0 ? 1000 : 10; width > 0; width /= 10) {
			out[at++] = (char)('0' + fields[i] / width % 10);
		}
		out[at++] = separators[i];
	}
	out[at] = '\0';
}

int cf_report_json(const struct cf_report *r, const char *device_id, char *buf, size_t len,
		   size_t *out_len)
{
	struct writer w = {buf, len, 0, 0};

	put(&w, "{", 1);
	put_key(&w, "v");
	put_uint(&w, r->version);
	put_key(&w, "device_id");
	put_json_string(&w, device_id, strlen(device_id));
	put_key(&w, "rollout_id");
	put_json_string(&w, r->rollout_id, strlen(r->rollout_id));
	put_key(&w, "seq");
	put_uint(&w, r->seq);
	const char *op = r->op != CF_OP_NONE ? cf_op_str(r->op) : r->op_name;
	if (op[0] != '\0') {
		put_key(&w, "op");
		put_json_string(&w, op, strlen(op));
	}
	put_key(&w, "phase");
	put_json_string(&w, cf_phase_str(r->phase), strlen(cf_phase_str(r->phase)));
	put_key(&w, "reason");
	put_json_string(&w, cf_reason_str(r->reason), strlen(cf_reason_str(r->reason)));
	put_key(&w, "detail");
	put_json_string(&w, r->detail, strlen(r->detail));
	put_key(&w, "time");
	put_time(&w, r->time);
	put_key(&w, "active_tags");
	put_tags(&w, r->active_tags, r->n_active);
	if (r->csr != NULL) {
		put_key(&w, "csr");
		put_json_string(&w, r->csr, strlen(r->csr));
	}
	return finish(&w, out_len);
}

int cf_state_json(const char *device_id, uint64_t time, const struct cf_state_item *items,
		  size_t n_items, const uint32_t *active, size_t n_active, const uint32_t *identity,
		  char *buf, size_t len, size_t *out_len)
{
	static const char hex[] = "0123456789abcdef";
	struct writer w = {buf, len, 0, 0};

	put(&w, "{", 1);
	put_key(&w, "v");
	put_uint(&w, CF_VERSION_MAX);
	put_key(&w, "device_id");
	put_json_string(&w, device_id, strlen(device_id));
	put_key(&w, "time");
	put_time(&w, time);
	put_key(&w, "credentials");
	put(&w, "[", 1);
	for (size_t i = 0; i < n_items; i++) {
		char digest[64];
		for (size_t k = 0; k < 32; k++) {
			digest[2 * k] = hex[items[i].sha256[k] >> 4];
			digest[2 * k + 1] = hex[items[i].sha256[k] & 15];
		}
		put_str(&w, i > 0 ? ",{\"sec_tag\":" : "{\"sec_tag\":");
		put_uint(&w, items[i].sec_tag);
		put_str(&w, ",\"type\":");
		put_uint(&w, items[i].type);
		put_str(&w, ",\"sha256\":");
		put_json_string(&w, digest, sizeof(digest));
		if (items[i].not_after != 0) {
			put_str(&w, ",\"not_after\":");
			put_time(&w, items[i].not_after);
		}
		if (items[i].pem != NULL) {
			put_str(&w, ",\"pem\":");
			put_json_string(&w, items[i].pem, items[i].pem_len);
		}
		put(&w, "}", 1);
	}
	put(&w, "]", 1);
	put_key(&w, "active_tags");
	put_tags(&w, active, n_active);
	if (identity != NULL) {
		put_key(&w, "identity_tag");
		put_uint(&w, *identity);
	}
	return finish(&w, out_len);
}
