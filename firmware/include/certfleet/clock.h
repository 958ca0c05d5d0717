/*
 * Port: the device clock (AT+CCLK? on the nRF9160), in seconds since the epoch, UTC.
 */
#ifndef CERTFLEET_CLOCK_H_
#define CERTFLEET_CLOCK_H_

#include <stdint.h>

struct cf_clock {
	void *ctx;
	uint64_t (*now)(void *ctx);
};

#endif /* CERTFLEET_CLOCK_H_ */
