/* Check 13 and the undo record's rules (core-internal). */
#ifndef CERTFLEET_CHECKS_H_
#define CERTFLEET_CHECKS_H_

#include <stdbool.h>
#include <stdint.h>

#include "certfleet/device.h"

/** Check 13 for an opened bundle; CF_REASON_OK or the refusal, *detail for people. */
enum cf_reason cf_check_operation(struct cf_device *dev, const struct cf_bundle *b, uint64_t now,
				  const char **detail);
/** Whether the undo record exists and has not expired at `now`. */
bool cf_undo_live(const struct cf_state *st, uint64_t now);
/** The active list a commit installs (the commit's own, else the stage's); its length. */
size_t cf_commit_list(const struct cf_state *st, const struct cf_bundle *b, uint32_t *out);

#endif /* CERTFLEET_CHECKS_H_ */
