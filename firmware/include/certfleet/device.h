/*
 * The device: check 13 of docs/protocol.md §4 and the state machine of §5 (contract
 * v2), on the ports of keystore.h, record.h, clock.h, probe.h and transport.h.
 *
 * Everything the device must remember lives in `struct cf_state`, persisted through
 * the record port BEFORE each key store change it must survive (intent first, as
 * MCUboot's swap state): a power cut between any two port calls leaves a record from
 * which `cf_device_boot` finishes or undoes the interrupted step, so the active list
 * always names sec_tags that hold a CA chain. No heap; the context is one struct.
 */
#ifndef CERTFLEET_DEVICE_H_
#define CERTFLEET_DEVICE_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "certfleet/bundle.h"
#include "certfleet/clock.h"
#include "certfleet/keystore.h"
#include "certfleet/limits.h"
#include "certfleet/probe.h"
#include "certfleet/reason.h"
#include "certfleet/record.h"
#include "certfleet/transport.h"

/** The report detail the core writes; the contract allows up to CF_DETAIL_MAX_BYTES. */
#define CF_REPORT_DETAIL_LEN 96
_Static_assert(CF_REPORT_DETAIL_LEN <= CF_DETAIL_MAX_BYTES, "details fit the contract");

/** A report message (docs/protocol.md §7) before its JSON encoding. */
struct cf_report {
	uint8_t version;
	char rollout_id[CF_REPORT_RID_MAX_BYTES + 1];
	uint64_t seq;
	enum cf_op op;	/**< the bundle's op when it is one the contract names */
	char op_name[CF_REPORT_OP_MAX_BYTES + 1]; /**< the op as the payload said it, if not */
	enum cf_phase phase;
	enum cf_reason reason;
	char detail[CF_REPORT_DETAIL_LEN + 1];
	uint64_t time;
	uint32_t active_tags[CF_TAG_LIST_MAX];
	size_t n_active;
	/** phase `csr` only: the %KEYGEN answer, NUL-terminated, valid while it is published
	 * (it lives on the keygen's stack, not in the device context); NULL otherwise */
	const char *csr;
};

/** Where an open stage is; persisted so a reboot knows what to finish or undo. */
enum cf_stage_phase {
	CF_STAGE_NONE = 0,
	CF_STAGE_WRITING,    /**< intent: items being written into the spare tag */
	CF_STAGE_WRITTEN,    /**< written, not yet probed: a reboot probes it */
	CF_STAGE_HEALTHY,    /**< the probe passed; waiting for commit until commit_by */
	CF_STAGE_KEYGEN,     /**< identity: the key is made and the CSR reported; waiting
			      *   for the certificate's stage until commit_by */
	CF_STAGE_MAKING_KEY, /**< identity, intent: the tag's items deleted, a key made (a
			      *   reboot makes it again from the subject kept here) */
};

/** The one undo record of contract v2. */
enum cf_undo_kind {
	CF_UNDO_NONE = 0,
	CF_UNDO_STAGE,
	CF_UNDO_COMMIT,
};

/** Everything the device keeps across a power cut. */
struct cf_state {
	uint64_t last_seq;
	uint32_t active[CF_TAG_LIST_MAX];
	uint8_t n_active;
	uint8_t n_signers;
	struct cf_signer signers[CF_SIGNERS_MAX];
	/* the open stage */
	uint8_t stage_phase; /* enum cf_stage_phase */
	uint8_t n_stage_active;
	uint32_t stage_tag;
	uint64_t stage_seq;
	uint64_t commit_by;
	uint32_t stage_active[CF_TAG_LIST_MAX];
	/* the stage's probe, so a reboot after the write still probes (§13) */
	uint8_t n_probe_tags;
	uint8_t probe_host_len;
	uint16_t probe_port;
	uint32_t probe_tags[CF_TAG_LIST_MAX];
	char probe_host[CF_PROBE_HOST_MAX_BYTES];
	/* the undo record: {rid, kind, tag, previous active list, undo_by} */
	uint8_t undo_kind; /* enum cf_undo_kind */
	uint8_t undo_rid_len;
	uint8_t n_undo_previous;
	uint8_t commit_unproven; /* the broker has not yet validated the committed list */
	uint32_t undo_tag;
	uint64_t undo_by; /* 0: kept until a later change drops it */
	char undo_rid[CF_RID_MAX_BYTES];
	uint32_t undo_previous[CF_TAG_LIST_MAX];
	/* intent: sec_tags whose items must be deleted (offline) before anything else */
	uint8_t n_pending_delete;
	uint32_t pending_delete[CF_TAG_LIST_MAX + 1];
	/* a retire over a TLS broker, its new list not yet validated by the broker: the
	 * previous list to return to, and the tags to delete once the list is proven (the
	 * retire's rid is kept in undo_rid) */
	uint8_t retire_unproven;
	uint8_t n_retire_previous;
	uint8_t n_retire_tags;
	uint32_t retire_previous[CF_TAG_LIST_MAX];
	uint32_t retire_tags[CF_TAG_LIST_MAX];
	/* record format 2 (issue 14) from here on; a format-1 record ends above and loads
	 * with none of it (no identity) */
	/* the identity: the sec_tag whose client certificate and key the broker connection
	 * presents (not in the active list, which names CA tags only) */
	uint32_t identity_tag;
	/* the identity the undo record returns to */
	uint32_t undo_prev_identity;
	uint8_t has_identity;
	/* the open stage is an identity one (keygen, then the certificate's stage) */
	uint8_t stage_identity;
	/* the undo record is an identity one, and whether the device had an identity before */
	uint8_t undo_identity;
	uint8_t undo_had_identity;
	/* the keygen's subject, so a reboot before its key was made makes it again */
	uint8_t subject_len;
	char subject[CF_SUBJECT_MAX_BYTES];
	/* record format 3 (issue 17) from here on; a format-2 record ends above and loads
	 * with nothing revoked */
	/* revoked delegations (the last revoke op's list, and the highest `before` sent):
	 * a delegation whose kid is listed, or issued before revoked_before, is refused */
	uint8_t n_revoked;
	uint8_t revoked[CF_REVOKED_KIDS_MAX][CF_KID_LEN];
	uint64_t revoked_before;
};

/** The ports a device runs on. */
struct cf_device_ports {
	struct cf_keystore keystore;
	struct cf_record_store record;
	struct cf_clock clock;
	struct cf_probe probe;
	struct cf_transport transport;
};

/** One device; all its memory. */
struct cf_device {
	char device_id[CF_DEVICE_ID_MAX + 1];
	struct cf_device_ports ports;
	struct cf_state state;
	struct cf_report report; /**< the report being published */
};

/**
 * Set up a device from its persisted record.
 *
 * @retval 0 the record was loaded.
 * @retval -ENOENT no record: the device must be provisioned (cf_device_provision).
 * @retval -EBADMSG the record is corrupt.
 */
int cf_device_init(struct cf_device *dev, const char *device_id,
		   const struct cf_device_ports *ports);

/** Factory provisioning: trusted signers and the active list, persisted. */
int cf_device_provision(struct cf_device *dev, const struct cf_signer *signers, size_t n_signers,
			const uint32_t *active, size_t n_active);

/**
 * Factory provisioning of the identity: the sec_tag whose client certificate (type 1)
 * and key (type 2), already in the key store, the broker connection presents; persisted.
 *
 * @retval -EINVAL the tag is active or does not hold both items.
 */
int cf_device_provision_identity(struct cf_device *dev, uint32_t tag);

/** After every power-up: finish or undo what the record says was interrupted. */
int cf_device_boot(struct cf_device *dev);

/**
 * Handle one received bundle (unverified bytes): check it, report, act.
 *
 * @retval 0 handled (rejected or acted on).
 * @retval -EAGAIN `received` was not acknowledged: nothing was done, seq kept.
 * @return another negative errno when a port failed; the record holds the intent.
 */
int cf_device_handle(struct cf_device *dev, const uint8_t *buf, size_t len);

/** Deadlines: fall back at commit_by, drop the undo record at undo_by. */
int cf_device_tick(struct cf_device *dev);

/** Serialize and persist the state (exposed for tests and ports). */
int cf_device_persist(struct cf_device *dev);

#endif /* CERTFLEET_DEVICE_H_ */
