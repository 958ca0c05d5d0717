/*
 * The host probe against real TLS servers (openssl s_server on a loopback port) with
 * chains from tests/vectors/tls: each reason of docs/protocol.md §6 from the handshake
 * that causes it; and with a client certificate (an identity stage's probe), a server
 * that accepts it and one that refuses it (`identity_refused`).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "device_harness.h"
#include "host_ports.h"

#define STAGED_TAG 43

static struct harness h;
static struct cf_host_probe probe;
static pid_t server = -1;
static uint16_t port;

static uint16_t free_port(void)
{
	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(addr);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
	close(fd);
	return ntohs(addr.sin_port);
}

static bool accepting(void)
{
	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port),
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	bool ok = connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0;
	close(fd);
	return ok;
}

/* openssl s_server with tests/vectors/tls/<name>.pem and .key (and a chain file, or a
 * CA file that a required client certificate must lead to). */
static void start_server_with(const char *name, const char *chain, const char *client_ca)
{
	char cert[512], key[512], chain_path[512], accept_at[32];
	snprintf(cert, sizeof(cert), "%s/tls/%s.pem", CF_TEST_VECTORS, name);
	snprintf(key, sizeof(key), "%s/tls/%s.key", CF_TEST_VECTORS, name);
	snprintf(chain_path, sizeof(chain_path), "%s/tls/%s", CF_TEST_VECTORS, chain ? chain : "");
	port = free_port();
	snprintf(accept_at, sizeof(accept_at), "127.0.0.1:%u", (unsigned)port);
	server = fork();
	assert_true(server >= 0);
	if (server == 0) {
		freopen("/dev/null", "w", stdout);
		freopen("/dev/null", "w", stderr);
		if (client_ca != NULL) {
			snprintf(chain_path, sizeof(chain_path), "%s/tls/%s", CF_TEST_VECTORS, client_ca);
			execl(CF_TEST_OPENSSL, "openssl", "s_server", "-quiet", "-tls1_2", "-accept",
			      accept_at, "-cert", cert, "-key", key, "-Verify", "1", "-CAfile",
			      chain_path, "-verify_return_error", NULL);
		} else if (chain != NULL) {
			execl(CF_TEST_OPENSSL, "openssl", "s_server", "-quiet", "-tls1_2", "-accept",
			      accept_at, "-cert", cert, "-key", key, "-cert_chain", chain_path, NULL);
		} else {
			execl(CF_TEST_OPENSSL, "openssl", "s_server", "-quiet", "-tls1_2", "-accept",
			      accept_at, "-cert", cert, "-key", key, NULL);
		}
		_exit(127);
	}
	for (int i = 0; i < 100 && !accepting(); i++) {
		struct timespec pause = {0, 50 * 1000 * 1000};
		nanosleep(&pause, NULL);
	}
	assert_true(accepting());
}

static void start_server(const char *name, const char *chain)
{
	start_server_with(name, chain, NULL);
}

static void stop_server(void)
{
	if (server > 0) {
		kill(server, SIGTERM);
		waitpid(server, NULL, 0);
		server = -1;
	}
}

static int setup(void **state)
{
	(void)state;
	static char staged[4097];
	char path[512];
	harness_init(&h, false);
	snprintf(path, sizeof(path), "%s/tls/staged-ca.pem", CF_TEST_VECTORS);
	memset(staged, 0, sizeof(staged));
	fixture_read(path, (uint8_t *)staged, sizeof(staged) - 1);
	fake_keystore_put(&h.world, STAGED_TAG, 0, staged);
	probe = (struct cf_host_probe){.keystore = &h.world.keystore, .timeout_ms = 3000};
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	stop_server();
	fake_world_free(&h.world);
	return 0;
}

static enum cf_reason run(const char *host, uint32_t tag)
{
	struct cf_probe port_ = cf_host_probe_port(&probe);
	return port_.run(port_.ctx, host, strlen(host), port, &tag, 1, NULL);
}

static enum cf_reason run_presenting(const char *host, uint32_t tag, uint32_t client_tag)
{
	struct cf_probe port_ = cf_host_probe_port(&probe);
	return port_.run(port_.ctx, host, strlen(host), port, &tag, 1, &client_tag);
}

/* A server that requires a client certificate accepts the identity's, refuses none. */
static void test_client_certificate_is_presented(void **state)
{
	(void)state;
	harness_provision_identity(&h);
	start_server_with("server", NULL, "identity-ca.pem");
	assert_int_equal(run_presenting("localhost", STAGED_TAG, OLD_IDENTITY_TAG), CF_REASON_OK);
	assert_int_not_equal(run("localhost", STAGED_TAG), CF_REASON_OK);
	/* a tag without a certificate and key: nothing to present */
	assert_int_equal(run_presenting("localhost", STAGED_TAG, 46), CF_REASON_HANDSHAKE_ERROR);
}

/* A server whose CAs do not know the client certificate alerts: identity_refused. */
static void test_refused_client_certificate(void **state)
{
	(void)state;
	harness_provision_identity(&h);
	start_server_with("server", NULL, "staged-ca.pem");
	assert_int_equal(run_presenting("localhost", STAGED_TAG, OLD_IDENTITY_TAG),
			 CF_REASON_IDENTITY_REFUSED);
}

/* A chain that leads to the staged CA, for the probed name, passes. */
static void test_valid_chain_is_ok(void **state)
{
	(void)state;
	start_server("server", NULL);
	assert_int_equal(run("localhost", STAGED_TAG), CF_REASON_OK);
}

/* Trusting only another sec_tag's CA, the same server is unknown_ca. */
static void test_other_ca_is_unknown_ca(void **state)
{
	(void)state;
	start_server("server", NULL);
	assert_int_equal(run("localhost", ACTIVE_TAG), CF_REASON_UNKNOWN_CA);
	assert_int_equal(run("localhost", 99), CF_REASON_UNKNOWN_CA); /* an empty sec_tag */
}

/* A server certificate past its notAfter is expired. */
static void test_expired_certificate(void **state)
{
	(void)state;
	start_server("expired", NULL);
	assert_int_equal(run("localhost", STAGED_TAG), CF_REASON_EXPIRED);
}

/* A name the certificate does not carry is a handshake_error. */
static void test_hostname_mismatch(void **state)
{
	(void)state;
	start_server("server", NULL);
	assert_int_equal(run("127.0.0.1", STAGED_TAG), CF_REASON_HANDSHAKE_ERROR);
}

/* A Certificate message over 4096 bytes is chain_too_large, though the chain is valid. */
static void test_chain_too_large(void **state)
{
	(void)state;
	start_server("big", "big-chain.pem");
	assert_int_equal(run("localhost", STAGED_TAG), CF_REASON_CHAIN_TOO_LARGE);
}

/* An address as the host matches the certificate's iPAddress name, and only that. */
static void test_address_matches_ip_san(void **state)
{
	(void)state;
	start_server("server-ip", NULL);
	assert_int_equal(run("127.0.0.1", STAGED_TAG), CF_REASON_OK);
	assert_int_equal(run("localhost", STAGED_TAG), CF_REASON_HANDSHAKE_ERROR);
}

/* Nobody listening is a handshake_error. */
static void test_connection_refused(void **state)
{
	(void)state;
	port = free_port();
	assert_int_equal(run("localhost", STAGED_TAG), CF_REASON_HANDSHAKE_ERROR);
}

/* A server that accepts but never answers is a timeout. */
static void test_silent_server_is_timeout(void **state)
{
	(void)state;
	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(addr);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	assert_int_equal(listen(fd, 1), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
	port = ntohs(addr.sin_port);
	probe.timeout_ms = 300;
	assert_int_equal(run("127.0.0.1", STAGED_TAG), CF_REASON_TIMEOUT);
	close(fd);
}

#define T(test) cmocka_unit_test_setup_teardown(test, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_valid_chain_is_ok),	T(test_other_ca_is_unknown_ca),
		T(test_expired_certificate),	T(test_hostname_mismatch),
		T(test_chain_too_large),	T(test_address_matches_ip_san),
		T(test_connection_refused),
		T(test_silent_server_is_timeout),
		T(test_client_certificate_is_presented),
		T(test_refused_client_certificate),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
