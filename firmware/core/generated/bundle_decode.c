/*
 * Generated from docs/bundle.cddl by 'make -C firmware generate'; do not edit.
 *
 * Generated using zcbor version 0.8.1
 * https://github.com/NordicSemiconductor/zcbor
 * Generated with a --default-max-qty of 7
 */

#include <stdint.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include "zcbor_decode.h"
#include "bundle_decode.h"
#include "zcbor_print.h"

#if DEFAULT_MAX_QTY != 7
#error "The type file was generated with a different default_max_qty than this file"
#endif

static bool decode_repeated_Protected_header_uint1union(zcbor_state_t *state, struct Protected_header_uint1union_r *result);
static bool decode_repeated_Protected_header_uint4bstr(zcbor_state_t *state, struct Protected_header_uint4bstr *result);
static bool decode_repeated_Protected_header_nintbstr(zcbor_state_t *state, struct Protected_header_nintbstr *result);
static bool decode_Header_label(zcbor_state_t *state, struct Header_label_r *result);
static bool decode_repeated_Protected_header_Header_label(zcbor_state_t *state, struct Protected_header_Header_label *result);
static bool decode_repeated_Bundle_payload_tag(zcbor_state_t *state, struct Bundle_payload_tag *result);
static bool decode_repeated_Bundle_payload_kids(zcbor_state_t *state, struct Bundle_payload_kids_r *result);
static bool decode_repeated_Tag_list_Sec_tag_m(zcbor_state_t *state, uint64_t *result);
static bool decode_Tag_list(zcbor_state_t *state, struct Tag_list *result);
static bool decode_repeated_Bundle_payload_tags(zcbor_state_t *state, struct Bundle_payload_tags *result);
static bool decode_Credential(zcbor_state_t *state, struct Credential *result);
static bool decode_repeated_Bundle_payload_creds(zcbor_state_t *state, struct Bundle_payload_creds_r *result);
static bool decode_Probe(zcbor_state_t *state, struct Probe *result);
static bool decode_repeated_Bundle_payload_probe(zcbor_state_t *state, struct Bundle_payload_probe *result);
static bool decode_repeated_Bundle_payload_active(zcbor_state_t *state, struct Bundle_payload_active *result);
static bool decode_repeated_Bundle_payload_before(zcbor_state_t *state, struct Bundle_payload_before *result);
static bool decode_Signer(zcbor_state_t *state, struct Signer *result);
static bool decode_repeated_Bundle_payload_signer(zcbor_state_t *state, struct Bundle_payload_signer *result);
static bool decode_repeated_Bundle_payload_subject(zcbor_state_t *state, struct Bundle_payload_subject *result);
static bool decode_repeated_Bundle_payload_undo_by(zcbor_state_t *state, struct Bundle_payload_undo_by *result);
static bool decode_repeated_Bundle_payload_commit_by(zcbor_state_t *state, struct Bundle_payload_commit_by *result);
static bool decode_repeated_Bundle_payload_retire_kid(zcbor_state_t *state, struct Bundle_payload_retire_kid *result);
static bool decode_repeated_Unprotected_header_Header_label(zcbor_state_t *state, struct Unprotected_header_Header_label *result);
static bool decode_Unprotected_header(zcbor_state_t *state, struct Unprotected_header *result);
static bool decode_COSE_Sign1(zcbor_state_t *state, struct COSE_Sign1 *result);
static bool decode_COSE_Sign1_Tagged(zcbor_state_t *state, struct COSE_Sign1 *result);
static bool decode_Bundle_payload(zcbor_state_t *state, struct Bundle_payload *result);
static bool decode_Protected_header(zcbor_state_t *state, struct Protected_header *result);
static bool decode_Bundle_envelope(zcbor_state_t *state, struct Bundle_envelope_r *result);


static bool decode_repeated_Protected_header_uint1union(
		zcbor_state_t *state, struct Protected_header_uint1union_r *result)
{
	zcbor_log("%s\r\n", __func__);
	bool int_res;

	bool tmp_result = ((((zcbor_uint64_expect(state, (1))))
	&& (zcbor_union_start_code(state) && (int_res = ((((zcbor_int64_decode(state, (&(*result).Protected_header_uint1union_int)))) && (((*result).Protected_header_uint1union_choice = Protected_header_uint1union_int_c), true))
	|| (((zcbor_tstr_decode(state, (&(*result).Protected_header_uint1union_tstr)))) && (((*result).Protected_header_uint1union_choice = Protected_header_uint1union_tstr_c), true))), zcbor_union_end_code(state), int_res))));

	if (!tmp_result) {
		zcbor_trace_file(state);
		zcbor_log("%s error: %s\r\n", __func__, zcbor_error_str(zcbor_peek_error(state)));
	} else {
		zcbor_log("%s success\r\n", __func__);
	}

	return tmp_result;
}

static bool decode_repeated_Protected_header_uint4bstr(
		zcbor_state_t *state, struct Protected_header_uint4bstr *result)
{
	zcbor_log("%s\r\n", __func__);

	bool tmp_result = ((((zcbor_uint64_expect(state, (4))))
	&& (zcbor_bstr_decode(state, (&(*result).Protected_header_uint4bstr)))));

	if (!tmp_result) {
		zcbor_trace_file(state);
		zcbor_log("%s error: %s\r\n", __func__, zcbor_error_str(zcbor_peek_error(state)));
	} else {
		zcbor_log("%s success\r\n", __func__);
	}

	return tmp_result;
}

static bool decode_repeated_Protected_header_nintbstr(
		zcbor_state_t *state, struct Protected_header_nintbstr *result)
{
	zcbor_log("%s\r\n", __func__);

	bool tmp_result = ((((zcbor_int64_expect(state, (-65537))))
	&& (zcbor_bstr_decode(state, (&(*result).Protected_header_nintbstr)))));

	if (!tmp_result) {
		zcbor_trace_file(state);
		zcbor_log("%s error: %s\r\n", __func__, zcbor_error_str(zcbor_peek_error(state)));
	} else {
		zcbor_log("%s success\r\n", __func__);
	}

	return tmp_result;
}

static bool decode_Header_label(
		zcbor_state_t *state, struct Header_label_r *result)
{
	zcbor_log("%s\r\n", __func__);
	bool int_res;

	bool tmp_result = (((zcbor_union_start_code(state) && (int_res = ((((zcbor_int64_decode(state, (&(*result).Header_label_int)))) && (((*result).Header_label_choice = Header_label_int_c), true))
	|| (((zcbor_tstr_decode(state, (&(*result).Header_label_tstr)))) && (((*result).Header_label_choice = Header_label_tstr_c), true))), zcbor_union_end_code(state), int_res))));

	if (!tmp_result) {
		zcbor_trace_file(state);
		zcbor_log("%s error: %s\r\n", __func__, zcbor_error_str(zcbor_peek_error(state)));
	} else {
		zcbor_log("%s success\r\n", __func__);
	}

	return tmp_result;
}

static bool decode_repeated_Protected_header_Header_label(
		zcbor_state_t *state, struct Protected_header_Header_label *result)
{
	zcbor_log("%s\r\n", __func__);

	bool tmp_result = ((((decode_Header_label(state, (&(*result).Protected_header_Header_label_key))))
	&& (zcbor_any_skip(state, NULL))));

	if (!tmp_result) {
		zcbor_trace_file(state);
		zcbor_log("%s error: %s\r\n", __func__, zcbor_error_str(zcbor_peek_error(state)));
	} else {
		zcbor_log("%s success\r\n", __func__);
	}

	return tmp_result;
}

static bool decode_repeated_Bundle_payload_tag(
		zcbor_state_t *state, struct Bundle_payload_tag *result)
{
	zcbor_log("%s\r\n", __func__);
	struct zcbor_string tmp_str;

	bool tmp_result = ((((zcbor_tstr_expect(state, ((tmp_str.value = (uint8_t *)"tag", tmp_str.len = sizeof("tag") - 1, &tmp_str)))))
	&& (zcbor_uint64_decode(state, (&(*result).Bundle_payload_tag)))
	&& ((((((*result).Bundle_payload_tag >= 0)
	&& ((*result).Bundle_payload_tag <= INT32_MAX)) || (zcbor_error(state, ZCBOR_ERR_WRONG_RANGE), false))) || (zcbor_error(state, ZCBOR_ERR_WRONG_RANGE), false))));

	if (!tmp_result) {
		zcbor_trace_file(state);
		zcbor_log("%s error: %s\r\n", __func__, zcbor_error_str(zcbor_peek_error(state)));
	} else {
		zcbor_log("%s success\r\n", __func__);
	}

	return tmp_result;
}

static bool decode_repeated_Bundle_payload_kids(
		zcbor_state_t *state, struct Bundle_payload_kids_r *result)
{
	zcbor_log("%s\r\n", __func__);
	struct zcbor_string tmp_str;

	bool tmp_result = ((((zcbor_tstr_expect(state, ((tmp_str.value = (uint8_t *)"kids", tmp_str.len = sizeof("kids") - 1, &tmp_str)))))
	&& (zcbor_list_start_decode(state) && ((zcbor_multi_decode(0, 8, &(*result).Bundle_payload_kids_bstr_count, (zcbor_decoder_t *)zcbor_bstr_decode, state, (&(*result).Bundle_payload_kids_bstr), sizeof(struct zcbor_string))) || (zcbor_list_map_end_force_decode(state), false)) && zcbor_list_end_decode(state))));

	if (!tmp_result) {
		zcbor_trace_file(state);
		zcbor_log("%s error: %s\r\n", __func__, zcbor_error_str(zcbor_peek_error(state)));
	} else {
		zcbor_log("%s success\r\n", __func__);
	}

	return tmp_result;
}

static bool decode_repeated_Tag_list_Sec_tag_m(
		zcbor_state_t *state, uint64_t *result)
{
	zcbor_log("%s\r\n", __func__);

	bool tmp_result = (((zcbor_uint64_decode(state, (&(*result))))
	&& ((((((*result) >= 0)
	&& ((*result) <= INT32_MAX)) || (zcbor_error(state, ZCBOR_ERR_WRONG_RANGE), false))) || (zcbor_error(state, ZCBOR_ERR_WRONG_RANGE), false))));

	if (!tmp_result) {
		zcbor_trace_file(state);
		zcbor_log("%s error: %s\r\n", __func__, zcbor_error_str(zcbor_peek_error(state)));
	} else {
		zcbor_log("%s success\r\n", __func__);
	}

	return tmp_result;
}

static bool decode_Tag_list(
		zcbor_state_t *state, struct Tag_list *result)
{
	zcbor_log("%s\r\n", __func__);

	bool tmp_result = (((zcbor_list_start_decode(state) && ((zcbor_multi_decode(1, 7, &(*result).Tag_list_Sec_tag_m_count, (zcbor_decoder_t *)decode_repeated_Tag_list_Sec_tag_m, state, (&(*result).Tag_list_Sec_tag_m), sizeof(uint64_t))) || (zcbor_list_map_end_force_decode(state), false)) && zcbor_list_end_decode(state))));

	if (!tmp_result) {
		zcbor_trace_file(state);
		zcbor_log("%s error: %s\r\n", __func__, zcbor_error_str(zcbor_peek_error(state)));
	} else {
		zcbor_log("%s success\r\n", __func__);
	}

	return tmp_result;
}

static bool decode_repeated_Bundle_payload_tags(
		zcbor_state_t *state, struct Bundle_payload_tags *result)
{
	zcbor_log("%s\r\n", __func__);
	struct zcbor_string tmp_str;

	bool tmp_result = ((((zcbor_tstr_expect(state, ((tmp_str.value = (uint8_t *)"tags", tmp_str.len = sizeof("tags") - 1, &tmp_str)))))
	&& (decode_Tag_list(state, (&(*result).Bundle_payload_tags)))));

	if (!tmp_result) {
		zcbor_trace_file(state);
		zcbor_log("%s error: %s\r\n", __func__, zcbor_error_str(zcbor_peek_error(state)));
	} else {
		zcbor_log("%s success\r\n", __func__);
	}

	return tmp_result;
}

static bool decode_Credential(
		zcbor_state_t *state, struct Credential *result)
{
	zcbor_log("%s\r\n", __func__);
	struct zcbor_string tmp_str;

	bool tmp_result = (((zcbor_map_start_decode(state) && (((((zcbor_tstr_expect(state, ((tmp_str.value = (uint8_t *)"pem", tmp_str.len = sizeof("pem") - 1, &tmp_str)))))
	&& (zcbor_tstr_decode(state, (&(*result).Credential_pem))))
	&& (((zcbor_tstr_expect(state, ((tmp_str.value = (uint8_t *)"type", tmp_str.len = sizeof("type") - 1, &tmp_str)))))
	&& (zcbor_uint64_decode(state, (&(*result).Credential_type)))
	&& ((((*result).Credential_type >= 0)
	&& ((*result).Credential_type <= 5)) || (zcbor_error(state, ZCBOR_ERR_WRONG_RANGE), false)))) || (zcbor_list_map_end_force_decode(state), false)) && zcbor_map_end_decode(state))));

	if (!tmp_result) {
		zcbor_trace_file(state);
		zcbor_log("%s error: %s\r\n", __func__, zcbor_error_str(zcbor_peek_error(state)));
	} else {
		zcbor_log("%s success\r\n", __func__);
	}

	return tmp_result;
}

static bool decode_repeated_Bundle_payload_creds(
		zcbor_state_t *state, struct Bundle_payload_creds_r *result)
{
	zcbor_log("%s\r\n", __func__);
	struct zcbor_string tmp_str;

	bool tmp_result = ((((zcbor_tstr_expect(state, ((tmp_str.value = (uint8_t *)"creds", tmp_str.len = sizeof("creds") - 1, &tmp_str)))))
	&& (zcbor_list_start_decode(state) && ((zcbor_multi_decode(1, 4, &(*result).Bundle_payload_creds_Credential_m_count, (zcbor_decoder_t *)decode_Credential, state, (&(*result).Bundle_payload_creds_Credential_m), sizeof(struct Credential))) || (zcbor_list_map_end_force_decode(state), false)) && zcbor_list_end_decode(state))));

	if (!tmp_result) {
		zcbor_trace_file(state);
		zcbor_log("%s error: %s\r\n", __func__, zcbor_error_str(zcbor_peek_error(state)));
	} else {
		zcbor_log("%s success\r\n", __func__);
	}

	return tmp_result;
}

static bool decode_Probe(
		zcbor_state_t *state, struct Probe *result)
{
	zcbor_log("%s\r\n", __func__);
	struct zcbor_string tmp_str;

	bool tmp_result = (((zcbor_map_start_decode(state) && (((((zcbor_tstr_expect(state, ((tmp_str.value = (uint8_t *)"host", tmp_str.len = sizeof("host") - 1, &tmp_str)))))
	&& (zcbor_tstr_decode(state, (&(*result).Probe_host)))
	&& ((((*result).Probe_host.len >= 1)
	&& ((*result).Probe_host.len <= 253)) || (zcbor_error(state, ZCBOR_ERR_WRONG_RANGE), false)))
	&& (((zcbor_tstr_expect(state, ((tmp_str.value = (uint8_t *)"port", tmp_str.len = sizeof("port") - 1, &tmp_str)))))
	&& (zcbor_uint64_decode(state, (&(*result).Probe_port)))
	&& ((((*result).Probe_port >= 1)
	&& ((*result).Probe_port <= UINT16_MAX)) || (zcbor_error(state, ZCBOR_ERR_WRONG_RANGE), false)))
	&& (((zcbor_tstr_expect(state, ((tmp_str.value = (uint8_t *)"tags", tmp_str.len = sizeof("tags") - 1, &tmp_str)))))
	&& (decode_Tag_list(state, (&(*result).Probe_tags))))) || (zcbor_list_map_end_force_decode(state), false)) && zcbor_map_end_decode(state))));

	if (!tmp_result) {
		zcbor_trace_file(state);
		zcbor_log("%s error: %s\r\n", __func__, zcbor_error_str(zcbor_peek_error(state)));
	} else {
		zcbor_log("%s success\r\n", __func__);
	}

	return tmp_result;
}

static bool decode_repeated_Bundle_payload_probe(
		zcbor_state_t *state, struct Bundle_payload_probe *result)
{
	zcbor_log("%s\r\n", __func__);
	struct zcbor_string tmp_str;

	bool tmp_result = ((((zcbor_tstr_expect(state, ((tmp_str.value = (uint8_t *)"probe", tmp_str.len = sizeof("probe") - 1, &tmp_str)))))
	&& (decode_Probe(state, (&(*result).Bundle_payload_probe)))));

	if (!tmp_result) {
		zcbor_trace_file(state);
		zcbor_log("%s error: %s\r\n", __func__, zcbor_error_str(zcbor_peek_error(state)));
	} else {
		zcbor_log("%s success\r\n", __func__);
	}

	return tmp_result;
}

static bool decode_repeated_Bundle_payload_active(
		zcbor_state_t *state, struct Bundle_payload_active *result)
{
	zcbor_log("%s\r\n", __func__);
	struct zcbor_string tmp_str;

	bool tmp_result = ((((zcbor_tstr_expect(state, ((tmp_str.value = (uint8_t *)"active", tmp_str.len = sizeof("active") - 1, &tmp_str)))))
	&& (decode_Tag_list(state, (&(*result).Bundle_payload_active)))));

	if (!tmp_result) {
		zcbor_trace_file(state);
		zcbor_log("%s error: %s\r\n", __func__, zcbor_error_str(zcbor_peek_error(state)));
	} else {
		zcbor_log("%s success\r\n", __func__);
	}

	return tmp_result;
}

static bool decode_repeated_Bundle_payload_before(
		zcbor_state_t *state, struct Bundle_payload_before *result)
{
	zcbor_log("%s\r\n", __func__);
	struct zcbor_string tmp_str;

	bool tmp_result = ((((zcbor_tstr_expect(state, ((tmp_str.value = (uint8_t *)"before", tmp_str.len = sizeof("before") - 1, &tmp_str)))))
	&& (zcbor_uint64_decode(state, (&(*result).Bundle_payload_before)))));

	if (!tmp_result) {
		zcbor_trace_file(state);
		zcbor_log("%s error: %s\r\n", __func__, zcbor_error_str(zcbor_peek_error(state)));
	} else {
		zcbor_log("%s success\r\n", __func__);
	}

	return tmp_result;
}

static bool decode_Signer(
		zcbor_state_t *state, struct Signer *result)
{
	zcbor_log("%s\r\n", __func__);
	struct zcbor_string tmp_str;

	bool tmp_result = (((zcbor_map_start_decode(state) && (((((zcbor_tstr_expect(state, ((tmp_str.value = (uint8_t *)"kid", tmp_str.len = sizeof("kid") - 1, &tmp_str)))))
	&& (zcbor_bstr_decode(state, (&(*result).Signer_kid))))
	&& (((zcbor_tstr_expect(state, ((tmp_str.value = (uint8_t *)"pub", tmp_str.len = sizeof("pub") - 1, &tmp_str)))))
	&& (zcbor_bstr_decode(state, (&(*result).Signer_pub))))) || (zcbor_list_map_end_force_decode(state), false)) && zcbor_map_end_decode(state))));

	if (!tmp_result) {
		zcbor_trace_file(state);
		zcbor_log("%s error: %s\r\n", __func__, zcbor_error_str(zcbor_peek_error(state)));
	} else {
		zcbor_log("%s success\r\n", __func__);
	}

	return tmp_result;
}

static bool decode_repeated_Bundle_payload_signer(
		zcbor_state_t *state, struct Bundle_payload_signer *result)
{
	zcbor_log("%s\r\n", __func__);
	struct zcbor_string tmp_str;

	bool tmp_result = ((((zcbor_tstr_expect(state, ((tmp_str.value = (uint8_t *)"signer", tmp_str.len = sizeof("signer") - 1, &tmp_str)))))
	&& (decode_Signer(state, (&(*result).Bundle_payload_signer)))));

	if (!tmp_result) {
		zcbor_trace_file(state);
		zcbor_log("%s error: %s\r\n", __func__, zcbor_error_str(zcbor_peek_error(state)));
	} else {
		zcbor_log("%s success\r\n", __func__);
	}

	return tmp_result;
}

static bool decode_repeated_Bundle_payload_subject(
		zcbor_state_t *state, struct Bundle_payload_subject *result)
{
	zcbor_log("%s\r\n", __func__);
	struct zcbor_string tmp_str;

	bool tmp_result = ((((zcbor_tstr_expect(state, ((tmp_str.value = (uint8_t *)"subject", tmp_str.len = sizeof("subject") - 1, &tmp_str)))))
	&& (zcbor_tstr_decode(state, (&(*result).Bundle_payload_subject)))
	&& ((((*result).Bundle_payload_subject.len >= 1)
	&& ((*result).Bundle_payload_subject.len <= 64)) || (zcbor_error(state, ZCBOR_ERR_WRONG_RANGE), false))));

	if (!tmp_result) {
		zcbor_trace_file(state);
		zcbor_log("%s error: %s\r\n", __func__, zcbor_error_str(zcbor_peek_error(state)));
	} else {
		zcbor_log("%s success\r\n", __func__);
	}

	return tmp_result;
}

static bool decode_repeated_Bundle_payload_undo_by(
		zcbor_state_t *state, struct Bundle_payload_undo_by *result)
{
	zcbor_log("%s\r\n", __func__);
	struct zcbor_string tmp_str;

	bool tmp_result = ((((zcbor_tstr_expect(state, ((tmp_str.value = (uint8_t *)"undo_by", tmp_str.len = sizeof("undo_by") - 1, &tmp_str)))))
	&& (zcbor_uint64_decode(state, (&(*result).Bundle_payload_undo_by)))));

	if (!tmp_result) {
		zcbor_trace_file(state);
		zcbor_log("%s error: %s\r\n", __func__, zcbor_error_str(zcbor_peek_error(state)));
	} else {
		zcbor_log("%s success\r\n", __func__);
	}

	return tmp_result;
}

static bool decode_repeated_Bundle_payload_commit_by(
		zcbor_state_t *state, struct Bundle_payload_commit_by *result)
{
	zcbor_log("%s\r\n", __func__);
	struct zcbor_string tmp_str;

	bool tmp_result = ((((zcbor_tstr_expect(state, ((tmp_str.value = (uint8_t *)"commit_by", tmp_str.len = sizeof("commit_by") - 1, &tmp_str)))))
	&& (zcbor_uint64_decode(state, (&(*result).Bundle_payload_commit_by)))));

	if (!tmp_result) {
		zcbor_trace_file(state);
		zcbor_log("%s error: %s\r\n", __func__, zcbor_error_str(zcbor_peek_error(state)));
	} else {
		zcbor_log("%s success\r\n", __func__);
	}

	return tmp_result;
}

static bool decode_repeated_Bundle_payload_retire_kid(
		zcbor_state_t *state, struct Bundle_payload_retire_kid *result)
{
	zcbor_log("%s\r\n", __func__);
	struct zcbor_string tmp_str;

	bool tmp_result = ((((zcbor_tstr_expect(state, ((tmp_str.value = (uint8_t *)"retire_kid", tmp_str.len = sizeof("retire_kid") - 1, &tmp_str)))))
	&& (zcbor_bstr_decode(state, (&(*result).Bundle_payload_retire_kid)))));

	if (!tmp_result) {
		zcbor_trace_file(state);
		zcbor_log("%s error: %s\r\n", __func__, zcbor_error_str(zcbor_peek_error(state)));
	} else {
		zcbor_log("%s success\r\n", __func__);
	}

	return tmp_result;
}

static bool decode_repeated_Unprotected_header_Header_label(
		zcbor_state_t *state, struct Unprotected_header_Header_label *result)
{
	zcbor_log("%s\r\n", __func__);

	bool tmp_result = ((((decode_Header_label(state, (&(*result).Unprotected_header_Header_label_key))))
	&& (zcbor_any_skip(state, NULL))));

	if (!tmp_result) {
		zcbor_trace_file(state);
		zcbor_log("%s error: %s\r\n", __func__, zcbor_error_str(zcbor_peek_error(state)));
	} else {
		zcbor_log("%s success\r\n", __func__);
	}

	return tmp_result;
}

static bool decode_Unprotected_header(
		zcbor_state_t *state, struct Unprotected_header *result)
{
	zcbor_log("%s\r\n", __func__);

	bool tmp_result = (((zcbor_map_start_decode(state) && ((zcbor_multi_decode(0, 7, &(*result).Unprotected_header_Header_label_count, (zcbor_decoder_t *)decode_repeated_Unprotected_header_Header_label, state, (&(*result).Unprotected_header_Header_label), sizeof(struct Unprotected_header_Header_label))) || (zcbor_list_map_end_force_decode(state), false)) && zcbor_map_end_decode(state))));

	if (!tmp_result) {
		zcbor_trace_file(state);
		zcbor_log("%s error: %s\r\n", __func__, zcbor_error_str(zcbor_peek_error(state)));
	} else {
		zcbor_log("%s success\r\n", __func__);
	}

	return tmp_result;
}

static bool decode_COSE_Sign1(
		zcbor_state_t *state, struct COSE_Sign1 *result)
{
	zcbor_log("%s\r\n", __func__);

	bool tmp_result = (((zcbor_list_start_decode(state) && ((((zcbor_bstr_decode(state, (&(*result).COSE_Sign1_protected))))
	&& ((decode_Unprotected_header(state, (&(*result).COSE_Sign1_unprotected))))
	&& ((zcbor_bstr_decode(state, (&(*result).COSE_Sign1_payload))))
	&& ((zcbor_bstr_decode(state, (&(*result).COSE_Sign1_signature)))
	&& ((((*result).COSE_Sign1_signature.len >= 64)
	&& ((*result).COSE_Sign1_signature.len <= 64)) || (zcbor_error(state, ZCBOR_ERR_WRONG_RANGE), false)))) || (zcbor_list_map_end_force_decode(state), false)) && zcbor_list_end_decode(state))));

	if (!tmp_result) {
		zcbor_trace_file(state);
		zcbor_log("%s error: %s\r\n", __func__, zcbor_error_str(zcbor_peek_error(state)));
	} else {
		zcbor_log("%s success\r\n", __func__);
	}

	return tmp_result;
}

static bool decode_COSE_Sign1_Tagged(
		zcbor_state_t *state, struct COSE_Sign1 *result)
{
	zcbor_log("%s\r\n", __func__);

	bool tmp_result = ((zcbor_tag_expect(state, 18)
	&& (decode_COSE_Sign1(state, (&(*result))))));

	if (!tmp_result) {
		zcbor_trace_file(state);
		zcbor_log("%s error: %s\r\n", __func__, zcbor_error_str(zcbor_peek_error(state)));
	} else {
		zcbor_log("%s success\r\n", __func__);
	}

	return tmp_result;
}

static bool decode_Bundle_payload(
		zcbor_state_t *state, struct Bundle_payload *result)
{
	zcbor_log("%s\r\n", __func__);
	struct zcbor_string tmp_str;

	bool tmp_result = (((zcbor_map_start_decode(state) && (((((zcbor_tstr_expect(state, ((tmp_str.value = (uint8_t *)"v", tmp_str.len = sizeof("v") - 1, &tmp_str)))))
	&& (zcbor_uint64_decode(state, (&(*result).Bundle_payload_v))))
	&& (((zcbor_tstr_expect(state, ((tmp_str.value = (uint8_t *)"op", tmp_str.len = sizeof("op") - 1, &tmp_str)))))
	&& (zcbor_tstr_decode(state, (&(*result).Bundle_payload_op))))
	&& (((zcbor_tstr_expect(state, ((tmp_str.value = (uint8_t *)"dev", tmp_str.len = sizeof("dev") - 1, &tmp_str)))))
	&& (zcbor_tstr_decode(state, (&(*result).Bundle_payload_dev)))
	&& ((((*result).Bundle_payload_dev.len >= 1)
	&& ((*result).Bundle_payload_dev.len <= 64)) || (zcbor_error(state, ZCBOR_ERR_WRONG_RANGE), false)))
	&& (((zcbor_tstr_expect(state, ((tmp_str.value = (uint8_t *)"exp", tmp_str.len = sizeof("exp") - 1, &tmp_str)))))
	&& (zcbor_uint64_decode(state, (&(*result).Bundle_payload_exp))))
	&& (((zcbor_tstr_expect(state, ((tmp_str.value = (uint8_t *)"iat", tmp_str.len = sizeof("iat") - 1, &tmp_str)))))
	&& (zcbor_uint64_decode(state, (&(*result).Bundle_payload_iat))))
	&& (((zcbor_tstr_expect(state, ((tmp_str.value = (uint8_t *)"rid", tmp_str.len = sizeof("rid") - 1, &tmp_str)))))
	&& (zcbor_tstr_decode(state, (&(*result).Bundle_payload_rid)))
	&& ((((*result).Bundle_payload_rid.len <= 64)) || (zcbor_error(state, ZCBOR_ERR_WRONG_RANGE), false)))
	&& (((zcbor_tstr_expect(state, ((tmp_str.value = (uint8_t *)"seq", tmp_str.len = sizeof("seq") - 1, &tmp_str)))))
	&& (zcbor_uint64_decode(state, (&(*result).Bundle_payload_seq))))
	&& zcbor_present_decode(&((*result).Bundle_payload_tag_present), (zcbor_decoder_t *)decode_repeated_Bundle_payload_tag, state, (&(*result).Bundle_payload_tag))
	&& zcbor_present_decode(&((*result).Bundle_payload_kids_present), (zcbor_decoder_t *)decode_repeated_Bundle_payload_kids, state, (&(*result).Bundle_payload_kids))
	&& zcbor_present_decode(&((*result).Bundle_payload_tags_present), (zcbor_decoder_t *)decode_repeated_Bundle_payload_tags, state, (&(*result).Bundle_payload_tags))
	&& zcbor_present_decode(&((*result).Bundle_payload_creds_present), (zcbor_decoder_t *)decode_repeated_Bundle_payload_creds, state, (&(*result).Bundle_payload_creds))
	&& zcbor_present_decode(&((*result).Bundle_payload_probe_present), (zcbor_decoder_t *)decode_repeated_Bundle_payload_probe, state, (&(*result).Bundle_payload_probe))
	&& zcbor_present_decode(&((*result).Bundle_payload_active_present), (zcbor_decoder_t *)decode_repeated_Bundle_payload_active, state, (&(*result).Bundle_payload_active))
	&& zcbor_present_decode(&((*result).Bundle_payload_before_present), (zcbor_decoder_t *)decode_repeated_Bundle_payload_before, state, (&(*result).Bundle_payload_before))
	&& zcbor_present_decode(&((*result).Bundle_payload_signer_present), (zcbor_decoder_t *)decode_repeated_Bundle_payload_signer, state, (&(*result).Bundle_payload_signer))
	&& zcbor_present_decode(&((*result).Bundle_payload_subject_present), (zcbor_decoder_t *)decode_repeated_Bundle_payload_subject, state, (&(*result).Bundle_payload_subject))
	&& zcbor_present_decode(&((*result).Bundle_payload_undo_by_present), (zcbor_decoder_t *)decode_repeated_Bundle_payload_undo_by, state, (&(*result).Bundle_payload_undo_by))
	&& zcbor_present_decode(&((*result).Bundle_payload_commit_by_present), (zcbor_decoder_t *)decode_repeated_Bundle_payload_commit_by, state, (&(*result).Bundle_payload_commit_by))
	&& zcbor_present_decode(&((*result).Bundle_payload_retire_kid_present), (zcbor_decoder_t *)decode_repeated_Bundle_payload_retire_kid, state, (&(*result).Bundle_payload_retire_kid))) || (zcbor_list_map_end_force_decode(state), false)) && zcbor_map_end_decode(state))));

	if (!tmp_result) {
		zcbor_trace_file(state);
		zcbor_log("%s error: %s\r\n", __func__, zcbor_error_str(zcbor_peek_error(state)));
	} else {
		zcbor_log("%s success\r\n", __func__);
	}

	return tmp_result;
}

static bool decode_Protected_header(
		zcbor_state_t *state, struct Protected_header *result)
{
	zcbor_log("%s\r\n", __func__);

	bool tmp_result = (((zcbor_map_start_decode(state) && ((zcbor_present_decode(&((*result).Protected_header_uint1union_present), (zcbor_decoder_t *)decode_repeated_Protected_header_uint1union, state, (&(*result).Protected_header_uint1union))
	&& zcbor_present_decode(&((*result).Protected_header_uint4bstr_present), (zcbor_decoder_t *)decode_repeated_Protected_header_uint4bstr, state, (&(*result).Protected_header_uint4bstr))
	&& zcbor_present_decode(&((*result).Protected_header_nintbstr_present), (zcbor_decoder_t *)decode_repeated_Protected_header_nintbstr, state, (&(*result).Protected_header_nintbstr))
	&& zcbor_multi_decode(0, 7, &(*result).Protected_header_Header_label_count, (zcbor_decoder_t *)decode_repeated_Protected_header_Header_label, state, (&(*result).Protected_header_Header_label), sizeof(struct Protected_header_Header_label))) || (zcbor_list_map_end_force_decode(state), false)) && zcbor_map_end_decode(state))));

	if (!tmp_result) {
		zcbor_trace_file(state);
		zcbor_log("%s error: %s\r\n", __func__, zcbor_error_str(zcbor_peek_error(state)));
	} else {
		zcbor_log("%s success\r\n", __func__);
	}

	return tmp_result;
}

static bool decode_Bundle_envelope(
		zcbor_state_t *state, struct Bundle_envelope_r *result)
{
	zcbor_log("%s\r\n", __func__);
	bool int_res;

	bool tmp_result = (((zcbor_union_start_code(state) && (int_res = ((((decode_COSE_Sign1_Tagged(state, (&(*result).Bundle_envelope_COSE_Sign1_Tagged_m)))) && (((*result).Bundle_envelope_choice = Bundle_envelope_COSE_Sign1_Tagged_m_c), true))
	|| (zcbor_union_elem_code(state) && (((decode_COSE_Sign1(state, (&(*result).Bundle_envelope_COSE_Sign1_m)))) && (((*result).Bundle_envelope_choice = Bundle_envelope_COSE_Sign1_m_c), true)))), zcbor_union_end_code(state), int_res))));

	if (!tmp_result) {
		zcbor_trace_file(state);
		zcbor_log("%s error: %s\r\n", __func__, zcbor_error_str(zcbor_peek_error(state)));
	} else {
		zcbor_log("%s success\r\n", __func__);
	}

	return tmp_result;
}



int cbor_decode_Bundle_envelope(
		const uint8_t *payload, size_t payload_len,
		struct Bundle_envelope_r *result,
		size_t *payload_len_out)
{
	zcbor_state_t states[6];

	return zcbor_entry_function(payload, payload_len, (void *)result, payload_len_out, states,
		(zcbor_decoder_t *)decode_Bundle_envelope, sizeof(states) / sizeof(zcbor_state_t), 1);
}


int cbor_decode_Protected_header(
		const uint8_t *payload, size_t payload_len,
		struct Protected_header *result,
		size_t *payload_len_out)
{
	zcbor_state_t states[4];

	return zcbor_entry_function(payload, payload_len, (void *)result, payload_len_out, states,
		(zcbor_decoder_t *)decode_Protected_header, sizeof(states) / sizeof(zcbor_state_t), 1);
}


int cbor_decode_Bundle_payload(
		const uint8_t *payload, size_t payload_len,
		struct Bundle_payload *result,
		size_t *payload_len_out)
{
	zcbor_state_t states[5];

	return zcbor_entry_function(payload, payload_len, (void *)result, payload_len_out, states,
		(zcbor_decoder_t *)decode_Bundle_payload, sizeof(states) / sizeof(zcbor_state_t), 1);
}
