/*
 * The host port's %KEYGEN (AT%KEYGEN=<sec_tag>,2,0) with Mbed TLS, with the modem's
 * rules: offline only (-EPERM), an empty slot (-EALREADY), a P-256 key that never
 * leaves the key store (it is the type-2 item's file; cf_host_keystore_read refuses
 * type 2 and nothing prints it), a PKCS#10 CSR with subject exactly CN=<subject>
 * signed ECDSA-SHA256, and the modem's attestation as issue 14's decisions define it:
 * COSE_Sign1, ES256, protected {1: -7, 4: kid}, kid = the first 8 bytes of SHA-256 of
 * the attestation key's SubjectPublicKeyInfo DER, payload the CBOR map {"csr": SHA-256
 * of the CSR DER, "dev": device id, "seq": the keygen bundle's seq, "tag": sec_tag}.
 *
 * The attestation key is derived as the simulated modem's is (so certfleet can be
 * given its public key): scalar = SHA-256("certfleet-attestation:" seed ":" device id)
 * read as a big-endian integer, mod n. On an nRF9160 the modem's own attestation
 * replaces all of this.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecdsa.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>
#include <mbedtls/sha256.h>
#include <mbedtls/x509_csr.h>

#include "host_ports.h"

#define CSR_DER_MAX 1024
#define KEY_PEM_MAX 512
#define COSE_MAX 256
#define SUBJECT_NAME_MAX (3 + 2 * CF_SUBJECT_MAX_BYTES + 1)

struct rng {
	mbedtls_entropy_context entropy;
	mbedtls_ctr_drbg_context drbg;
};

static int rng_start(struct rng *rng)
{
	mbedtls_entropy_init(&rng->entropy);
	mbedtls_ctr_drbg_init(&rng->drbg);
	return mbedtls_ctr_drbg_seed(&rng->drbg, mbedtls_entropy_func, &rng->entropy, NULL, 0) == 0
		       ? 0
		       : -EIO;
}

static void rng_end(struct rng *rng)
{
	mbedtls_ctr_drbg_free(&rng->drbg);
	mbedtls_entropy_free(&rng->entropy);
}

/* ---------------------------------------------------------------- CBOR, the few forms */

struct cbor {
	uint8_t *buf;
	size_t len, at;
};

static void cbor_head(struct cbor *c, uint8_t major, uint64_t value)
{
	uint8_t head[9];
	size_t n = 0;

	if (value < 24) {
		head[n++] = (uint8_t)(major << 5 | value);
	} else {
		int bytes = value <= 0xff ? 1 : value <= 0xffff ? 2 : value <= 0xffffffffu ? 4 : 8;
		head[n++] = (uint8_t)(major << 5 | (bytes == 1 ? 24 : bytes == 2 ? 25 : bytes == 4 ? 26 : 27));
		for (int i = bytes - 1; i >= 0; i--) {
			head[n++] = (uint8_t)(value >> (8 * i));
		}
	}
	if (c->at + n <= c->len) {
		memcpy(c->buf + c->at, head, n);
	}
	c->at += n;
}

static void cbor_bytes(struct cbor *c, uint8_t major, const void *data, size_t len)
{
	cbor_head(c, major, len);
	if (len > 0 && c->at + len <= c->len) {
		memcpy(c->buf + c->at, data, len);
	}
	c->at += len;
}

static void cbor_text(struct cbor *c, const char *text)
{
	cbor_bytes(c, 3, text, strlen(text));
}

/* ---------------------------------------------------------------- attestation key */

/* The attestation key of `device_id` under `seed`, and its kid. */
static int attestation_key(const char *seed, const char *device_id, mbedtls_pk_context *pk,
			   uint8_t kid[CF_KID_LEN], struct rng *rng)
{
	uint8_t digest[32], spki[128];
	mbedtls_sha256_context sha;

	mbedtls_sha256_init(&sha);
	mbedtls_sha256_starts_ret(&sha, 0);
	mbedtls_sha256_update_ret(&sha, (const uint8_t *)"certfleet-attestation:", 22);
	mbedtls_sha256_update_ret(&sha, (const uint8_t *)seed, strlen(seed));
	mbedtls_sha256_update_ret(&sha, (const uint8_t *)":", 1);
	mbedtls_sha256_update_ret(&sha, (const uint8_t *)device_id, strlen(device_id));
	mbedtls_sha256_finish_ret(&sha, digest);
	mbedtls_sha256_free(&sha);
	if (mbedtls_pk_setup(pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)) != 0) {
		return -EIO;
	}
	mbedtls_ecp_keypair *ec = mbedtls_pk_ec(*pk);
	int ret = mbedtls_ecp_group_load(&ec->grp, MBEDTLS_ECP_DP_SECP256R1);
	ret = ret != 0 ? ret : mbedtls_mpi_read_binary(&ec->d, digest, sizeof(digest));
	ret = ret != 0 ? ret : mbedtls_mpi_mod_mpi(&ec->d, &ec->d, &ec->grp.N);
	ret = ret != 0 ? ret
		       : mbedtls_ecp_mul(&ec->grp, &ec->Q, &ec->d, &ec->grp.G, mbedtls_ctr_drbg_random,
					 &rng->drbg);
	if (ret != 0) {
		return -EIO;
	}
	/* the DER is written at the end of the buffer */
	int len = mbedtls_pk_write_pubkey_der(pk, spki, sizeof(spki));
	if (len <= 0 || mbedtls_sha256_ret(spki + sizeof(spki) - len, (size_t)len, digest, 0) != 0) {
		return -EIO;
	}
	memcpy(kid, digest, CF_KID_LEN);
	return 0;
}

/* The COSE_Sign1 attestation over the claims; its length, or a negative errno. */
static int attest(const struct cf_host_keystore *ks, uint32_t tag, uint64_t seq,
		  const uint8_t csr_hash[32], uint8_t *out, size_t cap, struct rng *rng)
{
	uint8_t kid[CF_KID_LEN], protected_bytes[16], payload[160], tbs[256], hash[32], sig[64];
	mbedtls_pk_context pk;
	mbedtls_mpi r, s;
	int err;

	mbedtls_pk_init(&pk);
	mbedtls_mpi_init(&r);
	mbedtls_mpi_init(&s);
	if ((err = attestation_key(ks->fleet_seed, ks->device_id, &pk, kid, rng)) != 0) {
		goto out;
	}
	struct cbor prot = {protected_bytes, sizeof(protected_bytes), 0};
	cbor_head(&prot, 5, 2);
	cbor_head(&prot, 0, 1);
	cbor_head(&prot, 1, 6); /* -7: ES256 */
	cbor_head(&prot, 0, 4);
	cbor_bytes(&prot, 2, kid, sizeof(kid));
	/* the claims in deterministic order: "csr" < "dev" < "seq" < "tag" */
	struct cbor claims = {payload, sizeof(payload), 0};
	cbor_head(&claims, 5, 4);
	cbor_text(&claims, "csr");
	cbor_bytes(&claims, 2, csr_hash, 32);
	cbor_text(&claims, "dev");
	cbor_text(&claims, ks->device_id);
	cbor_text(&claims, "seq");
	cbor_head(&claims, 0, seq);
	cbor_text(&claims, "tag");
	cbor_head(&claims, 0, tag);
	/* Sig_structure ["Signature1", protected, h'', payload] */
	struct cbor to_sign = {tbs, sizeof(tbs), 0};
	cbor_head(&to_sign, 4, 4);
	cbor_text(&to_sign, "Signature1");
	cbor_bytes(&to_sign, 2, protected_bytes, prot.at);
	cbor_bytes(&to_sign, 2, NULL, 0);
	cbor_bytes(&to_sign, 2, payload, claims.at);
	err = -EIO;
	if (prot.at > prot.len || claims.at > claims.len || to_sign.at > to_sign.len ||
	    mbedtls_sha256_ret(tbs, to_sign.at, hash, 0) != 0) {
		goto out;
	}
	mbedtls_ecp_keypair *ec = mbedtls_pk_ec(pk);
	if (mbedtls_ecdsa_sign(&ec->grp, &r, &s, &ec->d, hash, sizeof(hash), mbedtls_ctr_drbg_random,
			       &rng->drbg) != 0 ||
	    mbedtls_mpi_write_binary(&r, sig, 32) != 0 || mbedtls_mpi_write_binary(&s, sig + 32, 32) != 0) {
		goto out;
	}
	struct cbor cose = {out, cap, 0};
	cbor_head(&cose, 6, 18); /* COSE_Sign1 tag */
	cbor_head(&cose, 4, 4);
	cbor_bytes(&cose, 2, protected_bytes, prot.at);
	cbor_head(&cose, 5, 0);
	cbor_bytes(&cose, 2, payload, claims.at);
	cbor_bytes(&cose, 2, sig, sizeof(sig));
	err = cose.at <= cose.len ? (int)cose.at : -ENOSPC;
out:
	mbedtls_mpi_free(&r);
	mbedtls_mpi_free(&s);
	mbedtls_pk_free(&pk);
	return err;
}

/* ---------------------------------------------------------------- the CSR and output */

static size_t b64url(const uint8_t *data, size_t len, char *out)
{
	static const char alphabet[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t n = 0;

	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)data[i] << 16 | (i + 1 < len ? (uint32_t)data[i + 1] << 8 : 0) |
			     (i + 2 < len ? data[i + 2] : 0);
		size_t chars = i + 2 < len ? 4 : i + 1 < len ? 3 : 2;
		for (size_t k = 0; k < chars; k++) {
			out[n++] = alphabet[(v >> (18 - 6 * k)) & 63];
		}
	}
	return n;
}

/* A DER length at `p` (short form, or 0x81/0x82); its value and header size, 0 if neither. */
static size_t der_len(const uint8_t *p, size_t avail, size_t *header)
{
	if (avail >= 1 && p[0] < 0x80) {
		*header = 1;
		return p[0];
	}
	if (avail >= 2 && p[0] == 0x81) {
		*header = 2;
		return p[1];
	}
	if (avail >= 3 && p[0] == 0x82) {
		*header = 3;
		return (size_t)p[1] << 8 | p[2];
	}
	*header = 0;
	return 0;
}

/*
 * Mbed TLS 2.28 writes the CSR's signatureAlgorithm ecdsa-with-SHA256 with a NULL
 * parameter, which RFC 5758 §3.2 forbids and strict readers (certfleet's) refuse. The
 * signature covers the CertificationRequestInfo only, so the identifier is written again
 * without it. Returns the new length in `out`, or 0 when the CSR is not of that shape.
 */
static size_t csr_without_null_param(const uint8_t *der, size_t len, uint8_t *out, size_t cap)
{
	static const uint8_t with_null[] = {0x30, 0x0c, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
					    0x3d, 0x04, 0x03, 0x02, 0x05, 0x00};
	size_t outer_header = 0, info_header = 0, at = 0;

	if (len < 2 || der[0] != 0x30 || der_len(der + 1, len - 1, &outer_header) != len - 1 - outer_header) {
		return 0;
	}
	at = 1 + outer_header;
	if (at >= len || der[at] != 0x30) {
		return 0;
	}
	size_t info_len = der_len(der + at + 1, len - at - 1, &info_header);
	size_t info_end = at + 1 + info_header + info_len;
	if (info_header == 0 || info_end + sizeof(with_null) > len ||
	    memcmp(der + info_end, with_null, sizeof(with_null)) != 0) {
		return 0;
	}
	size_t body = (info_end - at) + (sizeof(with_null) - 2) + (len - info_end - sizeof(with_null));
	size_t n = 0;
	if (body + 4 > cap) {
		return 0;
	}
	out[n++] = 0x30;
	if (body >= 0x100) {
		out[n++] = 0x82;
		out[n++] = (uint8_t)(body >> 8);
	} else if (body >= 0x80) {
		out[n++] = 0x81;
	}
	out[n++] = (uint8_t)body;
	memcpy(out + n, der + at, info_end - at);
	n += info_end - at;
	memcpy(out + n, with_null, sizeof(with_null) - 2);
	out[n + 1] = 0x0a;
	n += sizeof(with_null) - 2;
	memcpy(out + n, der + info_end + sizeof(with_null), len - info_end - sizeof(with_null));
	return n + len - info_end - sizeof(with_null);
}

/* "CN=<subject>" for Mbed TLS's name parser, which takes "\," for a comma in a value. */
static int subject_name(const char *subject, size_t len, char out[SUBJECT_NAME_MAX])
{
	size_t n = 0;

	if (len < 1 || len > CF_SUBJECT_MAX_BYTES || memchr(subject, '\0', len) != NULL) {
		return -EINVAL;
	}
	memcpy(out, "CN=", 3);
	n = 3;
	for (size_t i = 0; i < len; i++) {
		if (subject[i] == ',') {
			out[n++] = '\\';
		}
		out[n++] = subject[i];
	}
	out[n] = '\0';
	return 0;
}

int cf_host_keystore_keygen_with(struct cf_host_keystore *ks, uint32_t tag, const char *subject,
				 size_t subject_len, uint64_t seq, mbedtls_pk_context *key,
				 char *out, size_t len, size_t *out_len)
{
	static _Thread_local uint8_t der[CSR_DER_MAX], csr_der[CSR_DER_MAX], pem[KEY_PEM_MAX],
		cose[COSE_MAX];
	struct cf_keystore port = cf_host_keystore_port(ks);
	char name[SUBJECT_NAME_MAX];
	uint8_t csr_hash[32];
	bool taken = false;
	struct rng rng;
	mbedtls_x509write_csr csr;
	int err;

	if (ks->online) {
		return -EPERM;
	}
	if ((err = port.exists(ks, tag, CF_CRED_TYPE_CLIENT_KEY, &taken)) != 0) {
		return err;
	}
	if (taken) {
		return -EALREADY;
	}
	if ((err = subject_name(subject, subject_len, name)) != 0 || (err = rng_start(&rng)) != 0) {
		return err;
	}
	mbedtls_x509write_csr_init(&csr);
	err = -EIO;
	if (mbedtls_pk_write_key_pem(key, pem, sizeof(pem)) != 0) {
		goto out;
	}
	mbedtls_x509write_csr_set_md_alg(&csr, MBEDTLS_MD_SHA256);
	mbedtls_x509write_csr_set_key(&csr, key);
	if (mbedtls_x509write_csr_set_subject_name(&csr, name) != 0) {
		err = -EINVAL;
		goto out;
	}
	int written = mbedtls_x509write_csr_der(&csr, der, sizeof(der), mbedtls_ctr_drbg_random,
						&rng.drbg);
	size_t csr_len = written > 0 ? csr_without_null_param(der + sizeof(der) - written,
							       (size_t)written, csr_der, sizeof(csr_der))
				     : 0;
	if (csr_len == 0 || mbedtls_sha256_ret(csr_der, csr_len, csr_hash, 0) != 0) {
		goto out;
	}
	int cose_len = attest(ks, tag, seq, csr_hash, cose, sizeof(cose), &rng);
	if (cose_len < 0) {
		err = cose_len;
		goto out;
	}
	size_t need = (csr_len * 4 + 2) / 3 + 1 + ((size_t)cose_len * 4 + 2) / 3 + 1;
	if (need > len) {
		err = -ENOSPC;
		goto out;
	}
	/* the key lands in the store last: a failure before leaves the slot empty */
	if ((err = port.write(ks, tag, CF_CRED_TYPE_CLIENT_KEY, pem, strlen((const char *)pem))) != 0) {
		goto out;
	}
	size_t n = b64url(csr_der, csr_len, out);
	out[n++] = '.';
	n += b64url(cose, (size_t)cose_len, out + n);
	out[n] = '\0';
	*out_len = n;
out:
	mbedtls_platform_zeroize(pem, sizeof(pem));
	mbedtls_x509write_csr_free(&csr);
	rng_end(&rng);
	return err;
}

int cf_host_keystore_keygen(void *ctx, uint32_t tag, const char *subject, size_t subject_len,
			    uint64_t seq, char *out, size_t len, size_t *out_len)
{
	struct cf_host_keystore *ks = ctx;
	mbedtls_pk_context key;
	struct rng rng;
	int err;

	if (ks->online) {
		return -EPERM;
	}
	if ((err = rng_start(&rng)) != 0) {
		return err;
	}
	mbedtls_pk_init(&key);
	err = mbedtls_pk_setup(&key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)) != 0 ||
			      mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(key),
						  mbedtls_ctr_drbg_random, &rng.drbg) != 0
		      ? -EIO
		      : cf_host_keystore_keygen_with(ks, tag, subject, subject_len, seq, &key, out,
						     len, out_len);
	mbedtls_pk_free(&key);
	rng_end(&rng);
	return err;
}

int cf_host_attestation_public(const char *seed, const char *device_id,
			       uint8_t point[CF_P256_POINT_LEN], uint8_t kid[CF_KID_LEN])
{
	mbedtls_pk_context pk;
	struct rng rng;
	size_t len = 0;
	int err = rng_start(&rng);

	mbedtls_pk_init(&pk);
	if (err == 0) {
		err = attestation_key(seed, device_id, &pk, kid, &rng);
	}
	if (err == 0) {
		mbedtls_ecp_keypair *ec = mbedtls_pk_ec(pk);
		err = mbedtls_ecp_point_write_binary(&ec->grp, &ec->Q, MBEDTLS_ECP_PF_UNCOMPRESSED, &len,
						     point, CF_P256_POINT_LEN) == 0
			      ? 0
			      : -EIO;
	}
	mbedtls_pk_free(&pk);
	rng_end(&rng);
	return err;
}
