/*
 * Generated from docs/bundle.cddl by 'make -C firmware generate'; do not edit.
 *
 * Generated using zcbor version 0.8.1
 * https://github.com/NordicSemiconductor/zcbor
 * Generated with a --default-max-qty of 7
 */

#ifndef BUNDLE_DECODE_TYPES_H__
#define BUNDLE_DECODE_TYPES_H__

#include <stdint.h>
#include <stdbool.h>
#include <stddef.h>
#include <zcbor_common.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Which value for --default-max-qty this file was created with.
 *
 *  The define is used in the other generated file to do a build-time
 *  compatibility check.
 *
 *  See `zcbor --help` for more information about --default-max-qty
 */
#define DEFAULT_MAX_QTY 7

struct Protected_header_uint1union_r {
	union {
		int64_t Protected_header_uint1union_int;
		struct zcbor_string Protected_header_uint1union_tstr;
	};
	enum {
		Protected_header_uint1union_int_c,
		Protected_header_uint1union_tstr_c,
	} Protected_header_uint1union_choice;
};

struct Protected_header_uint4bstr {
	struct zcbor_string Protected_header_uint4bstr;
};

struct Protected_header_nintbstr {
	struct zcbor_string Protected_header_nintbstr;
};

struct Header_label_r {
	union {
		int64_t Header_label_int;
		struct zcbor_string Header_label_tstr;
	};
	enum {
		Header_label_int_c,
		Header_label_tstr_c,
	} Header_label_choice;
};

struct Protected_header_Header_label {
	struct Header_label_r Protected_header_Header_label_key;
};

struct Protected_header {
	struct Protected_header_uint1union_r Protected_header_uint1union;
	bool Protected_header_uint1union_present;
	struct Protected_header_uint4bstr Protected_header_uint4bstr;
	bool Protected_header_uint4bstr_present;
	struct Protected_header_nintbstr Protected_header_nintbstr;
	bool Protected_header_nintbstr_present;
	struct Protected_header_Header_label Protected_header_Header_label[7];
	size_t Protected_header_Header_label_count;
};

struct Bundle_payload_tag {
	uint64_t Bundle_payload_tag;
};

struct Bundle_payload_kids_r {
	struct zcbor_string Bundle_payload_kids_bstr[8];
	size_t Bundle_payload_kids_bstr_count;
};

struct Tag_list {
	uint64_t Tag_list_Sec_tag_m[7];
	size_t Tag_list_Sec_tag_m_count;
};

struct Bundle_payload_tags {
	struct Tag_list Bundle_payload_tags;
};

struct Credential {
	struct zcbor_string Credential_pem;
	uint64_t Credential_type;
};

struct Bundle_payload_creds_r {
	struct Credential Bundle_payload_creds_Credential_m[4];
	size_t Bundle_payload_creds_Credential_m_count;
};

struct Probe {
	struct zcbor_string Probe_host;
	uint64_t Probe_port;
	struct Tag_list Probe_tags;
};

struct Bundle_payload_probe {
	struct Probe Bundle_payload_probe;
};

struct Bundle_payload_active {
	struct Tag_list Bundle_payload_active;
};

struct Bundle_payload_before {
	uint64_t Bundle_payload_before;
};

struct Signer {
	struct zcbor_string Signer_kid;
	struct zcbor_string Signer_pub;
};

struct Bundle_payload_signer {
	struct Signer Bundle_payload_signer;
};

struct Bundle_payload_subject {
	struct zcbor_string Bundle_payload_subject;
};

struct Bundle_payload_undo_by {
	uint64_t Bundle_payload_undo_by;
};

struct Bundle_payload_commit_by {
	uint64_t Bundle_payload_commit_by;
};

struct Bundle_payload_retire_kid {
	struct zcbor_string Bundle_payload_retire_kid;
};

struct Bundle_payload {
	uint64_t Bundle_payload_v;
	struct zcbor_string Bundle_payload_op;
	struct zcbor_string Bundle_payload_dev;
	uint64_t Bundle_payload_exp;
	uint64_t Bundle_payload_iat;
	struct zcbor_string Bundle_payload_rid;
	uint64_t Bundle_payload_seq;
	struct Bundle_payload_tag Bundle_payload_tag;
	bool Bundle_payload_tag_present;
	struct Bundle_payload_kids_r Bundle_payload_kids;
	bool Bundle_payload_kids_present;
	struct Bundle_payload_tags Bundle_payload_tags;
	bool Bundle_payload_tags_present;
	struct Bundle_payload_creds_r Bundle_payload_creds;
	bool Bundle_payload_creds_present;
	struct Bundle_payload_probe Bundle_payload_probe;
	bool Bundle_payload_probe_present;
	struct Bundle_payload_active Bundle_payload_active;
	bool Bundle_payload_active_present;
	struct Bundle_payload_before Bundle_payload_before;
	bool Bundle_payload_before_present;
	struct Bundle_payload_signer Bundle_payload_signer;
	bool Bundle_payload_signer_present;
	struct Bundle_payload_subject Bundle_payload_subject;
	bool Bundle_payload_subject_present;
	struct Bundle_payload_undo_by Bundle_payload_undo_by;
	bool Bundle_payload_undo_by_present;
	struct Bundle_payload_commit_by Bundle_payload_commit_by;
	bool Bundle_payload_commit_by_present;
	struct Bundle_payload_retire_kid Bundle_payload_retire_kid;
	bool Bundle_payload_retire_kid_present;
};

struct Unprotected_header_Header_label {
	struct Header_label_r Unprotected_header_Header_label_key;
};

struct Unprotected_header {
	struct Unprotected_header_Header_label Unprotected_header_Header_label[7];
	size_t Unprotected_header_Header_label_count;
};

struct COSE_Sign1 {
	struct zcbor_string COSE_Sign1_protected;
	struct Unprotected_header COSE_Sign1_unprotected;
	struct zcbor_string COSE_Sign1_payload;
	struct zcbor_string COSE_Sign1_signature;
};

struct Bundle_envelope_r {
	union {
		struct COSE_Sign1 Bundle_envelope_COSE_Sign1_Tagged_m;
		struct COSE_Sign1 Bundle_envelope_COSE_Sign1_m;
	};
	enum {
		Bundle_envelope_COSE_Sign1_Tagged_m_c,
		Bundle_envelope_COSE_Sign1_m_c,
	} Bundle_envelope_choice;
};

#ifdef __cplusplus
}
#endif

#endif /* BUNDLE_DECODE_TYPES_H__ */
