/*
 * Port: the modem's key store (modem_key_mgmt / AT%CMNG on the nRF9160).
 *
 * The store has the modem's rules: writes and deletes only while offline
 * (-EPERM otherwise), one item per (sec_tag, type) (-EALREADY), a full store
 * (-ENOMEM), content it refuses (-EINVAL). The core writes only while offline and
 * deletes before it writes.
 *
 * `keygen` is `AT%KEYGEN=<sec_tag>,2,0`: the modem makes a P-256 key in (sec_tag, type 2)
 * that never leaves it (no read of type 2 exists; the digest of a made key is SHA-256 of
 * its public SubjectPublicKeyInfo DER) and answers base64url(CSR DER) "." base64url(a
 * COSE_Sign1 attestation over it), without padding.
 */
#ifndef CERTFLEET_KEYSTORE_H_
#define CERTFLEET_KEYSTORE_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cf_keystore {
	void *ctx;
	/** CFUN=4 (false) or CFUN=1 (true); 0 or a negative errno. */
	int (*set_online)(void *ctx, bool online);
	/** Store one item; 0 or -EPERM, -EALREADY, -ENOMEM, -EINVAL. */
	int (*write)(void *ctx, uint32_t sec_tag, uint8_t type, const uint8_t *data, size_t len);
	/** Delete one item; 0, -ENOENT if absent, or -EPERM while online. */
	int (*remove)(void *ctx, uint32_t sec_tag, uint8_t type);
	/** Whether an item exists; 0 or a negative errno. */
	int (*exists)(void *ctx, uint32_t sec_tag, uint8_t type, bool *exists);
	/** SHA-256 of an item's bytes (AT%CMNG=1); 0, -ENOENT or a negative errno. */
	int (*digest)(void *ctx, uint32_t sec_tag, uint8_t type, uint8_t digest[32]);
	/**
	 * %KEYGEN: a new key in (sec_tag, 2), a CSR with subject CN=<subject>, and the
	 * modem's attestation over it (`seq`, the keygen bundle's, is bound into the host
	 * port's attestation; the nRF9160's carries its own fields). Writes the answer and a
	 * NUL into `out`.
	 *
	 * @return 0 with *out_len bytes; -EPERM while online, -EALREADY when the slot is
	 *         taken, -ENOMEM when the store is full, -ENOSPC when `len` is too small,
	 *         another negative errno when the modem failed.
	 */
	int (*keygen)(void *ctx, uint32_t sec_tag, const char *subject, size_t subject_len,
		      uint64_t seq, char *out, size_t len, size_t *out_len);
};

#endif /* CERTFLEET_KEYSTORE_H_ */
