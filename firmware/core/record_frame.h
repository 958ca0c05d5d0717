/* Framing of the persisted record (core-internal). */
#ifndef CERTFLEET_RECORD_FRAME_H_
#define CERTFLEET_RECORD_FRAME_H_

#include <stddef.h>
#include <stdint.h>

#include "certfleet/device.h"

#define CF_RECORD_FRAME_LEN (8 + sizeof(struct cf_state) + 4)

/** Frame `state` into `out`; returns CF_RECORD_FRAME_LEN. */
size_t cf_record_frame(const struct cf_state *state, uint8_t out[CF_RECORD_FRAME_LEN]);
/** Check and unframe a stored record; 0 or -EBADMSG. */
int cf_record_unframe(const uint8_t *in, size_t len, struct cf_state *state);

#endif /* CERTFLEET_RECORD_FRAME_H_ */
