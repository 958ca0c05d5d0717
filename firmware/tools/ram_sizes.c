/*
 * Compiled by `make size` only: each array is as large as a structure the device
 * needs in RAM, so `arm-none-eabi-nm -S` prints their sizes on the target ABI.
 */
#include "certfleet/device.h"

char ram_device_context[sizeof(struct cf_device)];      /* all state, the caller's static */
char ram_state_persisted[sizeof(struct cf_state)];      /* the record, inside the context */
char ram_bundle_on_stack[sizeof(struct cf_bundle)];     /* cf_device_handle's largest local */
char ram_bundle_buffer[CF_BUNDLE_MAX_BYTES];            /* the received bytes (transport's) */

/* Issue 13's RAM goal, on the target ABI: what the device holds to take a bundle (its
 * context, the received bytes, the opened bundle) fits 8 KB. Contract v2's 6144-byte
 * bundle limit is what makes it fit (v1's 12288 alone was over). */
_Static_assert(sizeof(struct cf_device) + CF_BUNDLE_MAX_BYTES + sizeof(struct cf_bundle) <= 8192,
	       "the device context, the bundle buffer and the opened bundle exceed 8 KB");
