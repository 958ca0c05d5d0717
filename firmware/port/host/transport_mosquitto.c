/*
 * libmosquitto transport; see transport_mosquitto.h. The network runs on
 * libmosquitto's thread; the device runs on the caller's, which waits on a condition
 * variable for PUBACKs and bundles, so no callback ever blocks the network.
 */
#include <errno.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "certfleet/message.h"
#include "transport_mosquitto.h"

#define SESSION_EXPIRY_SECONDS (7 * 86400)
#define RECEIVE_MAXIMUM 4
#define STATE_ITEMS_MAX 32
/* Client certificates whose `pem` a state message carries (docs/protocol.md §2: so
 * certfleet learns the certificate it revokes once the identity is replaced). */
#define STATE_PEMS_MAX 4

static void deadline_in(struct timespec *at, uint32_t ms)
{
	clock_gettime(CLOCK_REALTIME, at);
	at->tv_sec += ms / 1000;
	at->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (at->tv_nsec >= 1000000000L) {
		at->tv_sec++;
		at->tv_nsec -= 1000000000L;
	}
}

static void on_connect(struct mosquitto *mosq, void *ctx, int rc, int flags,
		       const mosquitto_property *props)
{
	struct cf_host_mqtt *m = ctx;
	(void)flags, (void)props;
	if (rc != 0) {
		return;
	}
	mosquitto_subscribe_v5(mosq, NULL, m->bundle_topic, 1, 0, NULL);
	pthread_mutex_lock(&m->lock);
	m->connected = true;
	m->state_due = true;
	pthread_cond_broadcast(&m->changed);
	pthread_mutex_unlock(&m->lock);
}

static void on_disconnect(struct mosquitto *mosq, void *ctx, int rc,
			  const mosquitto_property *props)
{
	struct cf_host_mqtt *m = ctx;
	(void)mosq, (void)rc, (void)props;
	pthread_mutex_lock(&m->lock);
	m->connected = false;
	pthread_cond_broadcast(&m->changed);
	pthread_mutex_unlock(&m->lock);
}

static void on_publish(struct mosquitto *mosq, void *ctx, int mid, int reason,
		       const mosquitto_property *props)
{
	struct cf_host_mqtt *m = ctx;
	(void)mosq, (void)props;
	pthread_mutex_lock(&m->lock);
	/* a PUBACK with a failure reason code is not an acknowledgement */
	m->acked[m->n_acked++ % (sizeof(m->acked) / sizeof(m->acked[0]))] = reason < 0x80 ? mid : -1;
	pthread_cond_broadcast(&m->changed);
	pthread_mutex_unlock(&m->lock);
}

static void on_message(struct mosquitto *mosq, void *ctx, const struct mosquitto_message *msg,
		       const mosquitto_property *props)
{
	struct cf_host_mqtt *m = ctx;
	(void)mosq, (void)props;
	if (strcmp(msg->topic, m->bundle_topic) != 0 || msg->payloadlen < 0) {
		return;
	}
	pthread_mutex_lock(&m->lock);
	if (m->inbox_count < CF_HOST_INBOX) {
		size_t slot = (m->inbox_head + m->inbox_count++) % CF_HOST_INBOX;
		size_t len = (size_t)msg->payloadlen;
		memcpy(m->inbox[slot], msg->payload, len < CF_BUNDLE_MAX_BYTES ? len : CF_BUNDLE_MAX_BYTES);
		m->inbox_len[slot] = len;
	} else {
		fprintf(stderr, "certfleet-device: inbox full, a bundle was dropped\n");
	}
	pthread_cond_broadcast(&m->changed);
	pthread_mutex_unlock(&m->lock);
}

static bool was_acked(const struct cf_host_mqtt *m, int mid)
{
	size_t n = sizeof(m->acked) / sizeof(m->acked[0]);
	for (size_t i = 0; i < n && i < m->n_acked; i++) {
		if (m->acked[i] == mid) {
			return true;
		}
	}
	return false;
}

/* Publish QoS 1 and wait for the PUBACK. */
static int publish_acked(struct cf_host_mqtt *m, const char *topic, const char *payload, size_t len)
{
	struct timespec deadline;
	int mid = 0, err = 0;

	pthread_mutex_lock(&m->lock);
	if (!m->connected) {
		pthread_mutex_unlock(&m->lock);
		return -ENOTCONN;
	}
	if (mosquitto_publish_v5(m->mosq, &mid, topic, (int)len, payload, 1, false, NULL) !=
	    MOSQ_ERR_SUCCESS) {
		pthread_mutex_unlock(&m->lock);
		return -EIO;
	}
	deadline_in(&deadline, m->ack_timeout_ms);
	while (!was_acked(m, mid) && err == 0) {
		err = pthread_cond_timedwait(&m->changed, &m->lock, &deadline);
	}
	pthread_mutex_unlock(&m->lock);
	return err == 0 ? 0 : -ETIMEDOUT;
}

static int publish_state(struct cf_host_mqtt *m)
{
	static _Thread_local struct cf_state_item items[STATE_ITEMS_MAX];
	static _Thread_local char pems[STATE_PEMS_MAX][CF_CERT_ITEM_MAX_BYTES];
	static _Thread_local char json[CF_STATE_JSON_MAX(STATE_ITEMS_MAX) +
				       STATE_PEMS_MAX * CF_STATE_PEM_JSON_MAX(CF_CERT_ITEM_MAX_BYTES)];
	size_t n = 0, len = 0, n_pems = 0;
	const struct cf_state *st = &m->device->state;
	int err = cf_host_keystore_list(m->keystore, items, STATE_ITEMS_MAX, &n);

	for (size_t i = 0; err == 0 && i < n && n_pems < STATE_PEMS_MAX; i++) {
		size_t pem_len = 0;
		if (items[i].type == CF_CRED_TYPE_CLIENT_CERT &&
		    cf_host_keystore_read(m->keystore, items[i].sec_tag, items[i].type,
					  (uint8_t *)pems[n_pems], sizeof(pems[0]), &pem_len) == 0) {
			items[i].pem = pems[n_pems++];
			items[i].pem_len = pem_len;
		}
	}
	if (err == 0) {
		err = cf_state_json(m->device->device_id, (uint64_t)time(NULL), items, n, st->active,
				    st->n_active, st->has_identity ? &st->identity_tag : NULL, json,
				    sizeof(json), &len);
	}
	return err != 0 ? err : publish_acked(m, m->state_topic, json, len);
}

int cf_host_mqtt_publish_state_if_due(struct cf_host_mqtt *m)
{
	pthread_mutex_lock(&m->lock);
	bool due = m->state_due && m->connected;
	m->state_due = false;
	pthread_mutex_unlock(&m->lock);
	if (!due) {
		return 0;
	}
	int err = publish_state(m);
	if (err != 0) {
		pthread_mutex_lock(&m->lock);
		m->state_due = true; /* try again on the next turn */
		pthread_mutex_unlock(&m->lock);
	}
	return err;
}

static int publish_report(void *ctx, const struct cf_report *report)
{
	struct cf_host_mqtt *m = ctx;
	static _Thread_local char json[CF_REPORT_JSON_MAX];
	size_t len = 0;

	/* §2: a change of the active list is in the inventory before the report says so, and
	 * a device back online states its key store first, as after any CONNECT */
	pthread_mutex_lock(&m->lock);
	bool due = m->state_due;
	m->state_due = false;
	pthread_mutex_unlock(&m->lock);
	if (due || report->phase == CF_PHASE_COMMITTED || report->phase == CF_PHASE_ROLLED_BACK ||
	    report->phase == CF_PHASE_RETIRED || report->phase == CF_PHASE_FALLBACK) {
		publish_state(m);
	}
	int err = cf_report_json(report, m->device->device_id, json, sizeof(json), &len);
	return err != 0 ? err : publish_acked(m, m->report_topic, json, len);
}

size_t cf_host_mqtt_next_bundle(struct cf_host_mqtt *m, uint8_t *buf, uint32_t wait_ms)
{
	struct timespec deadline;
	size_t len = 0;

	deadline_in(&deadline, wait_ms);
	pthread_mutex_lock(&m->lock);
	while (m->inbox_count == 0 &&
	       pthread_cond_timedwait(&m->changed, &m->lock, &deadline) == 0) {
	}
	if (m->inbox_count > 0) {
		len = m->inbox_len[m->inbox_head];
		memcpy(buf, m->inbox[m->inbox_head], len < CF_BUNDLE_MAX_BYTES ? len : CF_BUNDLE_MAX_BYTES);
		m->inbox_head = (m->inbox_head + 1) % CF_HOST_INBOX;
		m->inbox_count--;
	}
	pthread_mutex_unlock(&m->lock);
	return len;
}

/* The CA chains of `tags`, one PEM file, for OpenSSL in libmosquitto; -ENOENT if none. */
static int write_ca_file(struct cf_host_mqtt *m, const uint32_t *tags, size_t n)
{
	static _Thread_local uint8_t pem[CF_CA_CHAIN_MAX_BYTES];
	char tmp[sizeof(m->ca_path) + 4];
	size_t found = 0;

	snprintf(tmp, sizeof(tmp), "%s.tmp", m->ca_path);
	FILE *f = fopen(tmp, "wb");
	if (f == NULL) {
		return -EIO;
	}
	for (size_t i = 0; i < n; i++) {
		size_t len = 0;
		if (cf_host_keystore_read(m->keystore, tags[i], CF_CRED_TYPE_CA_CHAIN, pem, sizeof(pem),
					  &len) == 0) {
			fwrite(pem, 1, len, f);
			fputc('\n', f);
			found++;
		}
	}
	fclose(f);
	if (found == 0 || rename(tmp, m->ca_path) != 0) {
		remove(tmp);
		return -ENOENT;
	}
	return 0;
}

/*
 * A fresh client: libmosquitto keeps its first TLS context for the client's life, so a
 * new CA list needs a new client (same id, Clean Start 0: the broker keeps the session).
 */
static int client_create(struct cf_host_mqtt *m)
{
	char cert[CF_HOST_PATH_MAX + 32], key[CF_HOST_PATH_MAX + 32];
	const char *certfile = NULL, *keyfile = NULL;

	if (m->tls && m->has_identity) {
		if (cf_host_keystore_item_path(m->keystore, m->identity_tag, CF_CRED_TYPE_CLIENT_CERT,
					       cert, sizeof(cert)) != 0 ||
		    cf_host_keystore_item_path(m->keystore, m->identity_tag, CF_CRED_TYPE_CLIENT_KEY,
					       key, sizeof(key)) != 0) {
			return -ENOENT;
		}
		certfile = cert;
		keyfile = key;
	}
	m->mosq = mosquitto_new(m->device->device_id, false, m);
	if (m->mosq == NULL) {
		return -ENOMEM;
	}
	mosquitto_threaded_set(m->mosq, true); /* our network thread, not mosquitto_loop_start */
	mosquitto_int_option(m->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
	mosquitto_connect_v5_callback_set(m->mosq, on_connect);
	mosquitto_disconnect_v5_callback_set(m->mosq, on_disconnect);
	mosquitto_publish_v5_callback_set(m->mosq, on_publish);
	mosquitto_message_v5_callback_set(m->mosq, on_message);
	mosquitto_reconnect_delay_set(m->mosq, 1, 30, true);
	if (m->tls && (mosquitto_tls_set(m->mosq, m->ca_path, NULL, certfile, keyfile, NULL) !=
			       MOSQ_ERR_SUCCESS ||
		       mosquitto_tls_opts_set(m->mosq, 1, "tlsv1.2", NULL) != MOSQ_ERR_SUCCESS)) {
		return -EINVAL;
	}
	return 0;
}

/*
 * The network thread. libmosquitto's own (mosquitto_loop_start) stops reconnecting for
 * good after a "fatal" error, a TLS error among them, and after the broker's own
 * DISCONNECT, which an MQTT 5 broker sends when it shuts down (0x8B): a restarted broker
 * would never see the device again. This one reconnects after a pause and runs the loop
 * again, until network_stop (set before mosquitto_disconnect, which ends the loop and
 * interrupts its waits).
 */
static void *network_main(void *arg)
{
	struct cf_host_mqtt *m = arg;

	while (!m->network_stop) {
		mosquitto_loop_forever(m->mosq, 1000, 1);
		for (int i = 0; i < 10 && !m->network_stop; i++) {
			struct timespec pause = {0, 100 * 1000 * 1000};
			nanosleep(&pause, NULL);
		}
		if (!m->network_stop) {
			mosquitto_reconnect(m->mosq); /* on failure the loop returns and we come back */
		}
	}
	return NULL;
}

static int network_start(struct cf_host_mqtt *m)
{
	m->network_stop = false;
	return pthread_create(&m->network, NULL, network_main, m) == 0 ? 0 : -EIO;
}

/* Disconnect and end the network thread. */
static void network_end(struct cf_host_mqtt *m)
{
	m->network_stop = true;
	mosquitto_disconnect_v5(m->mosq, 0, NULL);
	pthread_join(m->network, NULL);
}

static int connect_broker(struct cf_host_mqtt *m)
{
	mosquitto_property *props = NULL;

	mosquitto_property_add_int32(&props, MQTT_PROP_SESSION_EXPIRY_INTERVAL, SESSION_EXPIRY_SECONDS);
	mosquitto_property_add_int16(&props, MQTT_PROP_RECEIVE_MAXIMUM, RECEIVE_MAXIMUM);
	int rc = mosquitto_connect_bind_v5(m->mosq, m->host, m->port, 60, NULL, props);
	mosquitto_property_free_all(&props);
	return rc;
}

/*
 * A new connection validating the broker with `tags` only and presenting `identity`: the
 * proof a commit (of a list or an identity) needs before it stands (docs/protocol.md §5).
 * 0 once the broker accepted the connection.
 */
static int reconnect(void *ctx, const uint32_t *tags, size_t n, const uint32_t *identity)
{
	struct cf_host_mqtt *m = ctx;
	struct timespec deadline;
	int err = 0;

	m->has_identity = identity != NULL;
	m->identity_tag = identity != NULL ? *identity : 0;
	network_end(m);
	mosquitto_destroy(m->mosq);
	pthread_mutex_lock(&m->lock);
	m->connected = false;
	pthread_mutex_unlock(&m->lock);
	if (write_ca_file(m, tags, n) != 0 || client_create(m) != 0) {
		return -ECONNREFUSED; /* no CA chain to validate the broker with */
	}
	if (connect_broker(m) != MOSQ_ERR_SUCCESS) {
		network_start(m); /* keep trying in the background */
		return -ECONNREFUSED;
	}
	network_start(m);
	deadline_in(&deadline, m->ack_timeout_ms);
	pthread_mutex_lock(&m->lock);
	while (!m->connected && err == 0) {
		err = pthread_cond_timedwait(&m->changed, &m->lock, &deadline);
	}
	pthread_mutex_unlock(&m->lock);
	return err == 0 ? 0 : -ETIMEDOUT;
}

int cf_host_mqtt_start(struct cf_host_mqtt *m, const char *host, int port, const char *prefix,
		       const struct cf_device *device, struct cf_host_keystore *keystore)
{
	const char *id = device->device_id;

	m->device = device;
	m->keystore = keystore;
	m->ack_timeout_ms = m->ack_timeout_ms != 0 ? m->ack_timeout_ms : 10000;
	if (snprintf(m->report_topic, CF_HOST_TOPIC_MAX, "%s/%s/report", prefix, id) >= CF_HOST_TOPIC_MAX ||
	    snprintf(m->state_topic, CF_HOST_TOPIC_MAX, "%s/%s/state", prefix, id) >= CF_HOST_TOPIC_MAX ||
	    snprintf(m->bundle_topic, CF_HOST_TOPIC_MAX, "%s/%s/bundle", prefix, id) >= CF_HOST_TOPIC_MAX) {
		return -ENAMETOOLONG;
	}
	pthread_mutex_init(&m->lock, NULL);
	pthread_cond_init(&m->changed, NULL);
	if (strlen(host) >= sizeof(m->host)) {
		return -ENAMETOOLONG;
	}
	strcpy(m->host, host);
	m->port = port;
	if (m->tls) {
		const struct cf_state *st = &device->state;
		m->has_identity = st->has_identity;
		m->identity_tag = st->identity_tag;
		snprintf(m->ca_path, sizeof(m->ca_path), "%s/broker-ca.pem", keystore->dir);
		if (write_ca_file(m, st->active, st->n_active) != 0) {
			return -ENOENT;
		}
	}
	int err = client_create(m);
	if (err != 0) {
		return err;
	}
	int rc = connect_broker(m);
	if (rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_ERRNO) {
		return -ECONNREFUSED;
	}
	return network_start(m);
}

void cf_host_mqtt_stop(struct cf_host_mqtt *m)
{
	network_end(m);
	mosquitto_destroy(m->mosq);
}

void cf_host_mqtt_link_restarted(struct cf_host_mqtt *m)
{
	pthread_mutex_lock(&m->lock);
	m->state_due = true;
	pthread_mutex_unlock(&m->lock);
}

struct cf_transport cf_host_mqtt_transport(struct cf_host_mqtt *m)
{
	return (struct cf_transport){m, publish_report, m->tls ? reconnect : NULL};
}
