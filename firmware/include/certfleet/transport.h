/*
 * Port: the MQTT session (libmosquitto on the host, Zephyr's MQTT client on the
 * device): QoS 1 publishes that return once acknowledged, and a reconnect that
 * validates the broker with a sec_tag list and presents the device's identity (the
 * client certificate and key of one sec_tag, for a broker that requires one).
 */
#ifndef CERTFLEET_TRANSPORT_H_
#define CERTFLEET_TRANSPORT_H_

#include <stddef.h>
#include <stdint.h>

struct cf_report;

struct cf_transport {
	void *ctx;
	/** Publish a report (QoS 1); 0 once the broker acknowledged it (PUBACK). */
	int (*publish_report)(void *ctx, const struct cf_report *report);
	/**
	 * Reconnect with TLS validating the broker with `sec_tags` only and presenting
	 * the client certificate and key of `identity` (NULL: none); 0 when the broker's
	 * chain validated and the broker accepted the connection. NULL when the broker
	 * connection is not TLS.
	 */
	int (*reconnect)(void *ctx, const uint32_t *sec_tags, size_t n_tags,
			 const uint32_t *identity);
};

#endif /* CERTFLEET_TRANSPORT_H_ */
