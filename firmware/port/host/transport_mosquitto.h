/*
 * The host transport over libmosquitto: MQTT 5, client id = device id, Clean Start 0
 * with a 7-day session, Receive Maximum 4, the bundle topic subscribed QoS 1 after
 * every CONNECT, reports and states published QoS 1 and awaited until PUBACK. Over TLS
 * the broker is validated with the CA chains of the active tags only, as the modem's
 * socket is given the active tag list, and a device with an identity presents its
 * client certificate and key (the identity tag's key store files, used in place).
 */
#ifndef CERTFLEET_TRANSPORT_MOSQUITTO_H_
#define CERTFLEET_TRANSPORT_MOSQUITTO_H_

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "certfleet/device.h"
#include "host_ports.h"

/** Bundles held between the network thread and the device (the broker sends at most 4
 * unacknowledged; libmosquitto acknowledges on receipt, so a burst can hold more). */
#define CF_HOST_INBOX 16
#define CF_HOST_TOPIC_MAX 192

struct cf_host_mqtt {
	struct mosquitto *mosq;
	const struct cf_device *device; /**< whose state the state message tells */
	struct cf_host_keystore *keystore;
	char report_topic[CF_HOST_TOPIC_MAX];
	char state_topic[CF_HOST_TOPIC_MAX];
	char bundle_topic[CF_HOST_TOPIC_MAX];
	uint32_t ack_timeout_ms;
	bool tls;	    /**< the broker is TLS, validated with the active tags' CA chains */
	char host[CF_PROBE_HOST_MAX_BYTES + 1];
	int port;
	char ca_path[CF_HOST_PATH_MAX + 16]; /**< the CA chains the broker is validated with */
	bool has_identity;	/**< the connection presents the client certificate of: */
	uint32_t identity_tag;
	pthread_t network;  /**< runs libmosquitto's loop, again after a fatal error */
	volatile bool network_stop;
	pthread_mutex_t lock;
	pthread_cond_t changed;
	bool connected;
	bool state_due;	    /**< a CONNECT happened: publish the state */
	int acked[32];	    /**< message ids the broker acknowledged, a ring */
	size_t n_acked;
	size_t inbox_head, inbox_count;
	size_t inbox_len[CF_HOST_INBOX];
	uint8_t inbox[CF_HOST_INBOX][CF_BUNDLE_MAX_BYTES];
};

/**
 * Connect (in the background, reconnecting by itself) and subscribe. With `m->tls` set
 * beforehand, the broker must validate with the CA chains of the device's active tags.
 */
int cf_host_mqtt_start(struct cf_host_mqtt *m, const char *host, int port, const char *prefix,
		       const struct cf_device *device, struct cf_host_keystore *keystore);
/** Disconnect and stop the network thread. */
void cf_host_mqtt_stop(struct cf_host_mqtt *m);
/**
 * Take the oldest received bundle, waiting up to `wait_ms`.
 *
 * @return its length (which may exceed CF_BUNDLE_MAX_BYTES: only the first bytes are
 *         kept, check 1 refuses it unread), or 0 when none came.
 */
size_t cf_host_mqtt_next_bundle(struct cf_host_mqtt *m, uint8_t *buf, uint32_t wait_ms);
/** Publish the state message if a CONNECT made one due; 0 or a negative errno. */
int cf_host_mqtt_publish_state_if_due(struct cf_host_mqtt *m);
/**
 * The modem came back online (CFUN=1 after a key store change): on a device that is a
 * new CONNECT, so the state message is due before the next report.
 */
void cf_host_mqtt_link_restarted(struct cf_host_mqtt *m);
/** The transport port; over TLS its reconnect proves a new active list on the broker. */
struct cf_transport cf_host_mqtt_transport(struct cf_host_mqtt *m);

#endif /* CERTFLEET_TRANSPORT_MOSQUITTO_H_ */
