/*
 * The persisted record: `struct cf_state` framed by a magic, a format version, its
 * size and a CRC-32, and checked for counts within their arrays, so a device never
 * acts on a record it did not write. The record port stores the frame atomically;
 * this file only frames and checks it.
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "certfleet/device.h"
#include "record_frame.h"

#define RECORD_MAGIC 0x43465231u /* "CFR1" */
#define RECORD_FORMAT 3u /* 2: the identity (issue 14); 3: revoked delegations (issue 17) */
/* An older format is this format's layout up to the fields it did not have, padded to
 * the struct's alignment: a device updated from it keeps its record, with no identity
 * (format 1) and nothing revoked (formats 1 and 2). */
#define STATE_SIZE(len)                                                                            \
	(((len) + _Alignof(struct cf_state) - 1) / _Alignof(struct cf_state) *                      \
	 _Alignof(struct cf_state))
static const size_t older_lens[] = {
	offsetof(struct cf_state, identity_tag), /* format 1 */
	offsetof(struct cf_state, n_revoked),	 /* format 2 */
};

static uint32_t crc32(const uint8_t *data, size_t len)
{
	uint32_t crc = 0xffffffffu;

	for (size_t i = 0; i < len; i++) {
		crc ^= data[i];
		for (int bit = 0; bit < 8; bit++) {
			crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
		}
	}
	return ~crc;
}

static void put32(uint8_t *out, uint32_t value)
{
	for (int i = 0; i < 4; i++) {
		out[i] = (uint8_t)(value >> (8 * i));
	}
}

static uint32_t get32(const uint8_t *in)
{
	return (uint32_t)in[0] | (uint32_t)in[1] << 8 | (uint32_t)in[2] << 16 |
	       (uint32_t)in[3] << 24;
}

size_t cf_record_frame(const struct cf_state *state, uint8_t out[CF_RECORD_FRAME_LEN])
{
	put32(out, RECORD_MAGIC);
	put32(out + 4, RECORD_FORMAT << 16 | (uint32_t)sizeof(*state));
	memcpy(out + 8, state, sizeof(*state));
	put32(out + 8 + sizeof(*state), crc32(out, 8 + sizeof(*state)));
	return CF_RECORD_FRAME_LEN;
}

/* Every count within its array and every enum known (all one byte each): a record that is
 * not is refused. */
/* (an array of size -1, a compile error, if the field is not one byte) */
#define BYTE_FIELD(field, lo, hi)                                                                  \
	{offsetof(struct cf_state, field) +                                                        \
		 0 * sizeof(char[sizeof(((struct cf_state *)0)->field) == 1 ? 1 : -1]),           \
	 lo, hi}
static const struct {
	uint16_t offset;
	uint8_t min, max;
} byte_fields[] = {
	BYTE_FIELD(n_active, 1, CF_TAG_LIST_MAX),
	BYTE_FIELD(n_signers, 1, CF_SIGNERS_MAX),
	BYTE_FIELD(n_stage_active, 0, CF_TAG_LIST_MAX),
	BYTE_FIELD(n_undo_previous, 0, CF_TAG_LIST_MAX),
	BYTE_FIELD(undo_rid_len, 0, CF_RID_MAX_BYTES),
	BYTE_FIELD(n_pending_delete, 0, CF_TAG_LIST_MAX + 1),
	BYTE_FIELD(stage_phase, 0, CF_STAGE_MAKING_KEY),
	BYTE_FIELD(undo_kind, 0, CF_UNDO_COMMIT),
	BYTE_FIELD(commit_unproven, 0, 1),
	BYTE_FIELD(retire_unproven, 0, 1),
	BYTE_FIELD(n_retire_previous, 0, CF_TAG_LIST_MAX),
	BYTE_FIELD(n_retire_tags, 0, CF_TAG_LIST_MAX),
	BYTE_FIELD(n_probe_tags, 0, CF_TAG_LIST_MAX),
	BYTE_FIELD(probe_host_len, 0, CF_PROBE_HOST_MAX_BYTES),
	BYTE_FIELD(has_identity, 0, 1),
	BYTE_FIELD(stage_identity, 0, 1),
	BYTE_FIELD(undo_identity, 0, 1),
	BYTE_FIELD(undo_had_identity, 0, 1),
	BYTE_FIELD(subject_len, 0, CF_SUBJECT_MAX_BYTES),
	BYTE_FIELD(n_revoked, 0, CF_REVOKED_KIDS_MAX),
};

static bool state_sane(const struct cf_state *st)
{
	for (size_t i = 0; i < sizeof(byte_fields) / sizeof(byte_fields[0]); i++) {
		const uint8_t value = ((const uint8_t *)st)[byte_fields[i].offset];
		if (value < byte_fields[i].min || value > byte_fields[i].max) {
			return false;
		}
	}
	return true;
}

/* A frame of an older format: the state before the fields it did not have. */
static bool unframe_older(const uint8_t *in, size_t len, struct cf_state *state)
{
	for (uint32_t format = 1; format < RECORD_FORMAT; format++) {
		const size_t state_len = older_lens[format - 1];
		const size_t size = STATE_SIZE(state_len);
		if (len == 8 + size + 4 && get32(in) == RECORD_MAGIC &&
		    get32(in + 4) == (format << 16 | (uint32_t)size) &&
		    get32(in + 8 + size) == crc32(in, 8 + size)) {
			memset(state, 0, sizeof(*state));
			memcpy(state, in + 8, state_len);
			return true;
		}
	}
	return false;
}

int cf_record_unframe(const uint8_t *in, size_t len, struct cf_state *state)
{
	if (unframe_older(in, len, state)) {
		return state_sane(state) ? 0 : -EBADMSG;
	}
	if (len != CF_RECORD_FRAME_LEN || get32(in) != RECORD_MAGIC ||
	    get32(in + 4) != (RECORD_FORMAT << 16 | (uint32_t)sizeof(*state)) ||
	    get32(in + 8 + sizeof(*state)) != crc32(in, 8 + sizeof(*state))) {
		return -EBADMSG;
	}
	memcpy(state, in + 8, sizeof(*state));
	return state_sane(state) ? 0 : -EBADMSG;
}
