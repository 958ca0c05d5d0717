/*
 * Generated from docs/bundle.cddl by 'make -C firmware generate'; do not edit.
 *
 * Generated using zcbor version 0.8.1
 * https://github.com/NordicSemiconductor/zcbor
 * Generated with a --default-max-qty of 7
 */

#ifndef BUNDLE_DECODE_H__
#define BUNDLE_DECODE_H__

#include <stdint.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include "bundle_decode_types.h"

#ifdef __cplusplus
extern "C" {
#endif

#if DEFAULT_MAX_QTY != 7
#error "The type file was generated with a different default_max_qty than this file"
#endif


int cbor_decode_Bundle_envelope(
		const uint8_t *payload, size_t payload_len,
		struct Bundle_envelope_r *result,
		size_t *payload_len_out);


int cbor_decode_Protected_header(
		const uint8_t *payload, size_t payload_len,
		struct Protected_header *result,
		size_t *payload_len_out);


int cbor_decode_Bundle_payload(
		const uint8_t *payload, size_t payload_len,
		struct Bundle_payload *result,
		size_t *payload_len_out);


#ifdef __cplusplus
}
#endif

#endif /* BUNDLE_DECODE_H__ */
