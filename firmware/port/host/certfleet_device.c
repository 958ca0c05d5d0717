/*
 * certfleet-device: devices of docs/protocol.md as a host process, the C core on the
 * host port (file key store and record under --dir, Mbed TLS probe, libmosquitto).
 *
 *   certfleet-device --dir DIR (--device-id ID | --devices N [--id-prefix P])
 *       [--host 127.0.0.1] [--port 1883]
 *       [--prefix certfleet] [--tls] [--probe-timeout-ms 10000] [--clock EPOCH]
 *       [--signer KIDHEX:POINTHEX]... [--ca TAG=PEMFILE]... [--active TAG]...
 *       [--identity TAG=CERTFILE,KEYFILE] [--fleet-seed SEED]
 *
 * One device keeps its key store and record in DIR; with --devices N, device P00000 to
 * P{N-1} (prefix "cdev-" by default) each keep theirs in DIR/<id> and run on a thread of
 * their own, with a connection of their own. The first run provisions each device from
 * --signer, --ca and --active (as a factory would); later runs resume from the record,
 * finishing what a kill interrupted.
 * --tls: the broker is TLS, validated with the CA chains of the active tags only, and a
 * commit stands only once the broker validated with the new list (else fallback).
 * --clock starts the device clock at EPOCH (it then advances with the system's), for
 * tests whose bundles were signed for a fixed time. SIGINT or SIGTERM stop it.
 * --identity provisions the device's identity on its first run: the client certificate
 * and key put into TAG (types 1 and 2), presented to a TLS broker; "{id}" in the paths
 * stands for the device id (each of --devices N has its own). --fleet-seed (default
 * "certfleet") derives each device's attestation key as the simulated modem's is:
 * certfleet is given its public key the same way.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <mosquitto.h>
#include <pthread.h>

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

/* Everything one device owns. */
struct host_device {
	char id[CF_DEVICE_ID_MAX + 1];
	char dir[CF_HOST_PATH_MAX];
	struct cf_host_keystore keystore;
	struct cf_host_record record;
	struct cf_host_probe probe;
	struct cf_keystore modem; /* the key store port the wrapper below calls */
	struct cf_host_mqtt mqtt;
	struct cf_device device;
	uint8_t bundle[CF_BUNDLE_MAX_BYTES];
	pthread_t thread;
};

/*
 * Mbed TLS 2.28's PSA key slots are shared and not thread safe: the devices of one
 * process take turns in the core (the network runs on libmosquitto's threads).
 */
static pthread_mutex_t core_lock = PTHREAD_MUTEX_INITIALIZER;

/* The key store port, with CFUN=1 telling the transport that the link restarted. */
static int set_online(void *ctx, bool online)
{
	struct host_device *d = ctx;
	int err = d->modem.set_online(d->modem.ctx, online);
	if (err == 0 && online) {
		cf_host_mqtt_link_restarted(&d->mqtt);
	}
	return err;
}

static int ks_write(void *ctx, uint32_t tag, uint8_t type, const uint8_t *data, size_t len)
{
	struct host_device *d = ctx;
	return d->modem.write(d->modem.ctx, tag, type, data, len);
}

static int ks_remove(void *ctx, uint32_t tag, uint8_t type)
{
	struct host_device *d = ctx;
	return d->modem.remove(d->modem.ctx, tag, type);
}

static int ks_exists(void *ctx, uint32_t tag, uint8_t type, bool *exists)
{
	struct host_device *d = ctx;
	return d->modem.exists(d->modem.ctx, tag, type, exists);
}

static int ks_digest(void *ctx, uint32_t tag, uint8_t type, uint8_t digest[32])
{
	struct host_device *d = ctx;
	return d->modem.digest(d->modem.ctx, tag, type, digest);
}

static int ks_keygen(void *ctx, uint32_t tag, const char *subject, size_t subject_len,
		     uint64_t seq, char *out, size_t len, size_t *out_len)
{
	struct host_device *d = ctx;
	return d->modem.keygen(d->modem.ctx, tag, subject, subject_len, seq, out, len, out_len);
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

/* Put one file's content into (tag, type), as a factory would. */
static int put_file(struct cf_host_keystore *ks, uint32_t tag, uint8_t type, const char *path)
{
	static uint8_t content[8192];
	struct cf_keystore port = cf_host_keystore_port(ks);
	FILE *f = fopen(path, "rb");

	if (f == NULL) {
		return -errno;
	}
	size_t len = fread(content, 1, sizeof(content), f);
	fclose(f);
	port.set_online(port.ctx, false);
	int err = port.write(port.ctx, tag, type, content, len);
	port.set_online(port.ctx, true);
	memset(content, 0, sizeof(content));
	return err == -EALREADY ? 0 : err;
}

/* `path` with each "{id}" replaced by the device id; -ENAMETOOLONG. */
static int with_id(const char *path, const char *id, char *out, size_t len)
{
	size_t n = 0;

	for (const char *at = path; *at != '\0';) {
		const char *part = strncmp(at, "{id}", 4) == 0 ? id : at;
		size_t take = part == id ? strlen(id) : 1;
		if (n + take >= len) {
			return -ENAMETOOLONG;
		}
		memcpy(out + n, part, take);
		n += take;
		at += part == id ? 4 : 1;
	}
	out[n] = '\0';
	return 0;
}

/* --identity TAG=CERTFILE,KEYFILE ("{id}" in them: the device id) */
static int put_identity(struct cf_host_keystore *ks, const char *spec, const char *id,
			uint32_t *tag)
{
	char cert_spec[512], key_spec[512], cert[768], key[768];
	unsigned value;

	if (sscanf(spec, "%u=%511[^,],%511s", &value, cert_spec, key_spec) != 3 ||
	    with_id(cert_spec, id, cert, sizeof(cert)) != 0 ||
	    with_id(key_spec, id, key, sizeof(key)) != 0) {
		return -EINVAL;
	}
	*tag = value;
	int err = put_file(ks, value, CF_CRED_TYPE_CLIENT_CERT, cert);
	return err != 0 ? err : put_file(ks, value, CF_CRED_TYPE_CLIENT_KEY, key);
}

struct options {
	const char *dir, *device_id, *host, *prefix, *id_prefix, *identity, *fleet_seed;
	int port;
	unsigned devices;
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
			      .probe_timeout_ms = 10000, .id_prefix = "cdev-",
			      .fleet_seed = CF_HOST_FLEET_SEED};
	for (int i = 1; i < argc; i += 2) {
		const char *flag = argv[i], *value = i + 1 < argc ? argv[i + 1] : "";
		if (strcmp(flag, "--tls") == 0) {
			o->tls = true;
			i--; /* a flag without a value */
		} else if (strcmp(flag, "--dir") == 0) {
			o->dir = value;
		} else if (strcmp(flag, "--device-id") == 0) {
			o->device_id = value;
		} else if (strcmp(flag, "--devices") == 0) {
			o->devices = (unsigned)strtoul(value, NULL, 10);
		} else if (strcmp(flag, "--id-prefix") == 0) {
			o->id_prefix = value;
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
		} else if (strcmp(flag, "--identity") == 0) {
			o->identity = value;
		} else if (strcmp(flag, "--fleet-seed") == 0) {
			o->fleet_seed = value;
		} else if (strcmp(flag, "--ca") == 0 && o->n_cas < CF_TAG_LIST_MAX) {
			o->cas[o->n_cas++] = value;
		} else {
			return -EINVAL;
		}
	}
	return o->dir != NULL && (o->device_id != NULL) != (o->devices > 0) && o->devices <= 100000
		       ? 0
		       : -EINVAL;
}

/* Set up one device from its directory, provisioning it on its first run. */
static int open_device(struct host_device *d, const struct options *o)
{
	char path[CF_HOST_PATH_MAX + 16];
	int err;

	if (mkdir(d->dir, 0700) != 0 && errno != EEXIST) {
		fprintf(stderr, "certfleet-device: cannot create %s: %s\n", d->dir, strerror(errno));
		return -errno;
	}
	snprintf(path, sizeof(path), "%s/keystore", d->dir);
	if ((err = cf_host_keystore_init(&d->keystore, path)) != 0) {
		fprintf(stderr, "certfleet-device: cannot use %s: %s\n", path, strerror(-err));
		return err;
	}
	d->keystore.online = true; /* the device runs online; it goes offline only to write */
	if ((err = cf_host_keystore_attestation(&d->keystore, d->id, o->fleet_seed)) != 0) {
		fprintf(stderr, "certfleet-device: --fleet-seed over %d bytes\n", CF_HOST_SEED_MAX);
		return err;
	}
	snprintf(path, sizeof(path), "%s/record", d->dir);
	if ((err = cf_host_record_init(&d->record, path)) != 0) {
		return err;
	}
	d->probe = (struct cf_host_probe){.keystore = &d->keystore, .timeout_ms = o->probe_timeout_ms};
	d->modem = cf_host_keystore_port(&d->keystore);
	d->mqtt.tls = o->tls;
	struct cf_device_ports ports = {
		.keystore = {d, set_online, ks_write, ks_remove, ks_exists, ks_digest, ks_keygen},
		.record = cf_host_record_port(&d->record),
		.clock = {NULL, offset_now},
		.probe = cf_host_probe_port(&d->probe),
		.transport = cf_host_mqtt_transport(&d->mqtt),
	};
	err = cf_device_init(&d->device, d->id, &ports);
	if (err == -ENOENT) { /* first run: the factory's provisioning */
		for (size_t i = 0; i < o->n_cas; i++) {
			int put = put_ca(&d->keystore, o->cas[i]);
			if (put != 0) {
				fprintf(stderr, "certfleet-device: --ca %s: %s\n", o->cas[i], strerror(-put));
				return put;
			}
		}
		err = cf_device_provision(&d->device, o->signers, o->n_signers, o->active, o->n_active);
		uint32_t tag = 0;
		if (err == 0 && o->identity != NULL &&
		    ((err = put_identity(&d->keystore, o->identity, d->id, &tag)) != 0 ||
		     (err = cf_device_provision_identity(&d->device, tag)) != 0)) {
			fprintf(stderr, "certfleet-device: --identity %s: %s\n", o->identity, strerror(-err));
			return err;
		}
	}
	if (err != 0) {
		fprintf(stderr, "certfleet-device: no usable record in %s (%s); provision with "
				"--signer, --ca and --active\n", d->dir, strerror(-err));
	}
	return err;
}

/* One device's loop: the state when due, bundles in order, deadlines. */
static void *run_device(void *arg)
{
	struct host_device *d = arg;
	size_t pending = 0;

	pthread_mutex_lock(&core_lock);
	cf_device_boot(&d->device);
	pthread_mutex_unlock(&core_lock);
	while (!stopping) {
		cf_host_mqtt_publish_state_if_due(&d->mqtt);
		if (pending == 0) {
			pending = cf_host_mqtt_next_bundle(&d->mqtt, d->bundle, 200);
		}
		pthread_mutex_lock(&core_lock);
		int err = pending > 0 ? cf_device_handle(&d->device, d->bundle, pending) : 0;
		cf_device_tick(&d->device);
		pthread_mutex_unlock(&core_lock);
		if (err == -EAGAIN) {
			/* an unacknowledged `received` did nothing: hand the same bundle again */
			struct timespec pause = {0, 200 * 1000 * 1000};
			nanosleep(&pause, NULL);
		} else {
			pending = 0;
		}
	}
	return NULL;
}

int main(int argc, char **argv)
{
	static struct options o;
	int err = 0;

	if (parse(argc, argv, &o) != 0) {
		fprintf(stderr, "usage: certfleet-device --dir DIR (--device-id ID | --devices N "
				"[--id-prefix P]) [--host H] [--port P] [--prefix P] [--tls] "
				"[--probe-timeout-ms MS] [--clock EPOCH] [--signer KIDHEX:POINTHEX]... "
				"[--ca TAG=PEMFILE]... [--active TAG]... [--identity TAG=CERTFILE,KEYFILE] "
				"[--fleet-seed SEED]\n");
		return 2;
	}
	size_t n = o.devices > 0 ? o.devices : 1;
	struct host_device *devices = calloc(n, sizeof(*devices)); /* the host's, not the core's */
	if (devices == NULL || (o.devices > 0 && mkdir(o.dir, 0700) != 0 && errno != EEXIST)) {
		fprintf(stderr, "certfleet-device: cannot set up %zu devices in %s\n", n, o.dir);
		return 1;
	}
	for (size_t i = 0; i < n && err == 0; i++) {
		struct host_device *d = &devices[i];
		char id[128], dir[2 * CF_HOST_PATH_MAX];
		if (o.devices > 0) {
			snprintf(id, sizeof(id), "%.100s%05u", o.id_prefix, (unsigned)i);
			snprintf(dir, sizeof(dir), "%.200s/%s", o.dir, id);
		} else {
			snprintf(id, sizeof(id), "%.100s", o.device_id);
			snprintf(dir, sizeof(dir), "%.200s", o.dir);
		}
		if (strlen(id) > CF_DEVICE_ID_MAX || strlen(dir) >= sizeof(d->dir) - 16) {
			fprintf(stderr, "certfleet-device: device id %s or directory %s too long\n", id, dir);
			return 1;
		}
		memcpy(d->id, id, strlen(id) + 1);
		memcpy(d->dir, dir, strlen(dir) + 1);
		err = open_device(d, &o);
	}
	if (err != 0) {
		return 1;
	}
	signal(SIGINT, stop);
	signal(SIGTERM, stop);
	mosquitto_lib_init();
	for (size_t i = 0; i < n; i++) {
		struct host_device *d = &devices[i];
		err = cf_host_mqtt_start(&d->mqtt, o.host, o.port, o.prefix, &d->device, &d->keystore);
		if (err != 0 || pthread_create(&d->thread, NULL, run_device, d) != 0) {
			fprintf(stderr, "certfleet-device: %s: MQTT: %s\n", d->id, strerror(-err));
			stopping = 1;
			n = i;
			break;
		}
	}
	if (n > 1 || o.devices > 0) {
		printf("ready: %zu devices\n", n);
		fflush(stdout);
	}
	for (size_t i = 0; i < n; i++) {
		pthread_join(devices[i].thread, NULL);
		cf_host_mqtt_stop(&devices[i].mqtt);
	}
	mosquitto_lib_cleanup();
	free(devices);
	return err != 0 ? 1 : 0;
}
