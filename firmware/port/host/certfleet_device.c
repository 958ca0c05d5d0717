/*
 * certfleet-device: one device of docs/protocol.md as a host process, the C core on
 * the host port (file key store and record under --dir, Mbed TLS probe, libmosquitto).
 *
 *   certfleet-device --dir DIR --device-id ID [--host 127.0.0.1] [--port 1883]
 *       [--prefix certfleet] [--tls] [--probe-timeout-ms 10000] [--clock EPOCH]
 *       [--signer KIDHEX:POINTHEX]... [--ca TAG=PEMFILE]... [--active TAG]...
 *
 * The first run provisions the device from --signer, --ca and --active (as a factory
 * would); later runs resume from the record in DIR, finishing what a kill interrupted.
 * --tls: the broker is TLS, validated with the CA chains of the active tags only, and a
 * commit stands only once the broker validated with the new list (else fallback).
 * --clock starts the device clock at EPOCH (it then advances with the system's), for
 * tests whose bundles were signed for a fixed time. SIGINT or SIGTERM stop it.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "certfleet/device.h"
#include "host_ports.h"
#include "transport_mosquitto.h"

static volatile sig_atomic_t stopping;
static int64_t clock_offset;

static void stop(int sig)
{
	(void)sig;
	stopping = 1;
}

static uint64_t offset_now(void *ctx)
{
	(void)ctx;
	return (uint64_t)((int64_t)time(NULL) + clock_offset);
}

/* The key store port, with CFUN=1 telling the transport that the link restarted. */
static struct cf_keystore modem;
static struct cf_host_mqtt mqtt;

static int set_online(void *ctx, bool online)
{
	int err = modem.set_online(ctx, online);
	if (err == 0 && online) {
		cf_host_mqtt_link_restarted(&mqtt);
	}
	return err;
}

static int hex(const char *text, uint8_t *out, size_t len)
{
	if (strlen(text) < 2 * len) {
		return -EINVAL;
	}
	for (size_t i = 0; i < len; i++) {
		unsigned value;
		if (sscanf(text + 2 * i, "%2x", &value) != 1) {
			return -EINVAL;
		}
		out[i] = (uint8_t)value;
	}
	return 0;
}

static int put_ca(struct cf_host_keystore *ks, const char *spec)
{
	static uint8_t pem[CF_CA_CHAIN_MAX_BYTES + 1];
	unsigned tag;
	char path[512];
	struct cf_keystore port = cf_host_keystore_port(ks);

	if (sscanf(spec, "%u=%511s", &tag, path) != 2) {
		return -EINVAL;
	}
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		return -errno;
	}
	size_t len = fread(pem, 1, sizeof(pem), f);
	fclose(f);
	port.set_online(port.ctx, false);
	int err = port.write(port.ctx, tag, CF_CRED_TYPE_CA_CHAIN, pem, len);
	port.set_online(port.ctx, true);
	return err == -EALREADY ? 0 : err;
}

struct options {
	const char *dir, *device_id, *host, *prefix;
	int port;
	uint32_t probe_timeout_ms;
	bool tls;
	struct cf_signer signers[CF_SIGNERS_MAX];
	size_t n_signers;
	uint32_t active[CF_TAG_LIST_MAX];
	size_t n_active;
	const char *cas[CF_TAG_LIST_MAX];
	size_t n_cas;
};

static int parse(int argc, char **argv, struct options *o)
{
	*o = (struct options){.host = "127.0.0.1", .prefix = "certfleet", .port = 1883,
			      .probe_timeout_ms = 10000};
	for (int i = 1; i < argc; i += 2) {
		const char *flag = argv[i], *value = i + 1 < argc ? argv[i + 1] : "";
		if (strcmp(flag, "--tls") == 0) {
			o->tls = true;
			i--; /* a flag without a value */
		} else if (strcmp(flag, "--dir") == 0) {
			o->dir = value;
		} else if (strcmp(flag, "--device-id") == 0) {
			o->device_id = value;
		} else if (strcmp(flag, "--host") == 0) {
			o->host = value;
		} else if (strcmp(flag, "--port") == 0) {
			o->port = atoi(value);
		} else if (strcmp(flag, "--prefix") == 0) {
			o->prefix = value;
		} else if (strcmp(flag, "--probe-timeout-ms") == 0) {
			o->probe_timeout_ms = (uint32_t)strtoul(value, NULL, 10);
		} else if (strcmp(flag, "--clock") == 0) {
			clock_offset = strtoll(value, NULL, 10) - (int64_t)time(NULL);
		} else if (strcmp(flag, "--signer") == 0 && o->n_signers < CF_SIGNERS_MAX) {
			struct cf_signer *s = &o->signers[o->n_signers++];
			const char *colon = strchr(value, ':');
			if (colon == NULL || hex(value, s->kid, CF_KID_LEN) != 0 ||
			    hex(colon + 1, s->pub, CF_P256_POINT_LEN) != 0) {
				return -EINVAL;
			}
		} else if (strcmp(flag, "--active") == 0 && o->n_active < CF_TAG_LIST_MAX) {
			o->active[o->n_active++] = (uint32_t)strtoul(value, NULL, 10);
		} else if (strcmp(flag, "--ca") == 0 && o->n_cas < CF_TAG_LIST_MAX) {
			o->cas[o->n_cas++] = value;
		} else {
			return -EINVAL;
		}
	}
	return o->dir != NULL && o->device_id != NULL ? 0 : -EINVAL;
}

int main(int argc, char **argv)
{
	static struct options o;
	static struct cf_host_keystore keystore;
	static struct cf_host_record record;
	static struct cf_device device;
	static uint8_t bundle[CF_BUNDLE_MAX_BYTES];
	static struct cf_host_probe probe;
	char path[CF_HOST_PATH_MAX];
	int err;

	if (parse(argc, argv, &o) != 0) {
		fprintf(stderr, "usage: certfleet-device --dir DIR --device-id ID [--host H] "
				"[--port P] [--prefix P] [--tls] [--probe-timeout-ms MS] [--clock EPOCH] "
				"[--signer KIDHEX:POINTHEX]... [--ca TAG=PEMFILE]... [--active TAG]...\n");
		return 2;
	}
	snprintf(path, sizeof(path), "%s/keystore", o.dir);
	if (mkdir(o.dir, 0700) != 0 && errno != EEXIST) {
		fprintf(stderr, "certfleet-device: cannot create %s: %s\n", o.dir, strerror(errno));
		return 1;
	}
	if ((err = cf_host_keystore_init(&keystore, path)) != 0) {
		fprintf(stderr, "certfleet-device: cannot use %s: %s\n", path, strerror(-err));
		return 1;
	}
	keystore.online = true; /* the device runs online; it goes offline only to write */
	snprintf(path, sizeof(path), "%s/record", o.dir);
	cf_host_record_init(&record, path);
	probe = (struct cf_host_probe){.keystore = &keystore, .timeout_ms = o.probe_timeout_ms};
	modem = cf_host_keystore_port(&keystore);
	mqtt.tls = o.tls;
	struct cf_device_ports ports = {
		.keystore = {modem.ctx, set_online, modem.write, modem.remove, modem.exists, modem.digest},
		.record = cf_host_record_port(&record),
		.clock = {NULL, offset_now},
		.probe = cf_host_probe_port(&probe),
		.transport = cf_host_mqtt_transport(&mqtt),
	};
	err = cf_device_init(&device, o.device_id, &ports);
	if (err == -ENOENT) { /* first run: the factory's provisioning */
		for (size_t i = 0; i < o.n_cas && err == -ENOENT; i++) {
			int put = put_ca(&keystore, o.cas[i]);
			if (put != 0) {
				fprintf(stderr, "certfleet-device: --ca %s: %s\n", o.cas[i], strerror(-put));
				return 1;
			}
		}
		err = cf_device_provision(&device, o.signers, o.n_signers, o.active, o.n_active);
	}
	if (err != 0) {
		fprintf(stderr, "certfleet-device: no usable record in %s (%s); provision with "
				"--signer, --ca and --active\n", o.dir, strerror(-err));
		return 1;
	}
	signal(SIGINT, stop);
	signal(SIGTERM, stop);
	if ((err = cf_host_mqtt_start(&mqtt, o.host, o.port, o.prefix, &device, &keystore)) != 0) {
		fprintf(stderr, "certfleet-device: MQTT: %s\n", strerror(-err));
		return 1;
	}
	cf_device_boot(&device);
	size_t pending = 0;
	while (!stopping) {
		cf_host_mqtt_publish_state_if_due(&mqtt);
		if (pending == 0) {
			pending = cf_host_mqtt_next_bundle(&mqtt, bundle, 200);
		}
		if (pending > 0) {
			/* an unacknowledged `received` did nothing: hand the same bundle again */
			if (cf_device_handle(&device, bundle, pending) != -EAGAIN) {
				pending = 0;
			} else {
				struct timespec pause = {0, 200 * 1000 * 1000};
				nanosleep(&pause, NULL);
			}
		}
		cf_device_tick(&device);
	}
	cf_host_mqtt_stop(&mqtt);
	return 0;
}
