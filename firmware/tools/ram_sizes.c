/*
 * Compiled by `make size` only: each array is as large as a structure the device
 * needs in RAM, so `arm-none-eabi-nm -S` prints their sizes on the target ABI.
 */
#include "certfleet/device.h"

char ram_device_context[sizeof(struct cf_device)];      /* all state, the caller's static */
char ram_state_persisted[sizeof(struct cf_state)];      /* the record, inside the context */
char ram_bundle_on_stack[sizeof(struct cf_bundle)];     /* cf_device_handle's largest local */
char ram_bundle_buffer[CF_BUNDLE_MAX_BYTES];            /* the received bytes (transport's) */
