/*
 * `make stack`: the stack high-water mark of bundle verification on the host.
 *
 * Runs cf_bundle_open (checks 1 to 12: COSE decoding, SHA-256 and ES256 through Mbed
 * TLS's PSA, the payload decoder) on each bundle named on the command line, on a
 * thread whose stack was painted beforehand, and prints the deepest use. Host figures
 * include Mbed TLS's software ECDSA; on an nRF9160 the CryptoCell does that work.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "certfleet/bundle.h"

#define STACK_SIZE (256 * 1024)
#define PAINT 0xa5

static uint8_t stack[STACK_SIZE] __attribute__((aligned(64)));
static uint8_t buf[CF_BUNDLE_MAX_BYTES + 1];
static size_t buf_len;
static struct cf_signer signer;
static enum cf_reason result;

static void *verify(void *arg)
{
	(void)arg;
	struct cf_bundle bundle;
	const struct cf_bundle_env env = {
		.device_id = "nrf-352656100000000",
		.last_seq = 10,
		.now = 1800000000,
		.signers = &signer,
		.n_signers = 1,
	};
	result = cf_bundle_open(buf, buf_len, &env, &bundle);
	return NULL;
}

static void *idle(void *arg)
{
	return arg;
}

/* Bytes of the painted stack a thread running `body` touched. */
static size_t touched(void *(*body)(void *))
{
	pthread_attr_t attr;
	pthread_t thread;
	size_t untouched = 0;

	memset(stack, PAINT, sizeof(stack));
	pthread_attr_init(&attr);
	pthread_attr_setstack(&attr, stack, sizeof(stack));
	if (pthread_create(&thread, &attr, body, NULL) != 0 || pthread_join(thread, NULL) != 0) {
		exit(1);
	}
	while (untouched < sizeof(stack) && stack[untouched] == PAINT) {
		untouched++;
	}
	return sizeof(stack) - untouched;
}

static int hex(const char *text, uint8_t *out, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned value;
		if (sscanf(text + 2 * i, "%2x", &value) != 1) {
			return -1;
		}
		out[i] = (uint8_t)value;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 4 || hex(argv[1], signer.kid, CF_KID_LEN) || hex(argv[2], signer.pub, CF_P256_POINT_LEN)) {
		fprintf(stderr, "usage: stack_depth KID_HEX PUB_HEX BUNDLE...\n");
		return 2;
	}
	/* glibc keeps the thread's descriptor and TLS in the given stack: not ours */
	const size_t baseline = touched(idle);
	size_t deepest = 0;
	for (int i = 3; i < argc; i++) {
		FILE *f = fopen(argv[i], "rb");
		if (f == NULL) {
			perror(argv[i]);
			return 1;
		}
		buf_len = fread(buf, 1, sizeof(buf), f);
		fclose(f);
		size_t used = touched(verify) - baseline;
		printf("%-40s %-12s %6zu bytes of stack\n", strrchr(argv[i], '/') + 1,
		       cf_reason_str(result), used);
		deepest = used > deepest ? used : deepest;
	}
	printf("deepest: %zu bytes (beyond an idle thread's %zu)\n", deepest, baseline);
	return 0;
}
