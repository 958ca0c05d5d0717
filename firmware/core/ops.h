/* Operations and reports of the device (core-internal); see ops.c. */
#ifndef CERTFLEET_OPS_H_
#define CERTFLEET_OPS_H_

#include "certfleet/device.h"

/** Fill dev->report for bundle `b` (NULL: a report that names no bundle). */
void cf_report_begin(struct cf_device *dev, const struct cf_bundle *b, enum cf_phase phase,
		     enum cf_reason reason, const char *detail);
/** Fill dev->report about the open stage, whose bundle is gone. */
void cf_report_stage(struct cf_device *dev, enum cf_phase phase, enum cf_reason reason,
		     const char *detail);
/** Reconnect to the broker with the active list and the identity (if any). */
int cf_reconnect(struct cf_device *dev);
/** Publish dev->report; 0 once acknowledged. */
int cf_publish(struct cf_device *dev);
/** Offline, delete what the intent names, online, persist it done. */
int cf_finish_deletes(struct cf_device *dev);
/** Discard the open stage: intent first, then the deletes. */
int cf_discard_stage(struct cf_device *dev);
/** Return to the undo record's previous active list. */
int cf_undo_commit(struct cf_device *dev);
/** Mark a sec_tag's items for deletion in the intent. */
void cf_pend_delete(struct cf_state *st, uint32_t tag);
/** End the open stage and its stage record (not persisted). */
void cf_drop_stage(struct cf_state *st);

int cf_op_stage(struct cf_device *dev, const struct cf_bundle *b);
/** Probe the written stage (persisted parameters) and report; a failure discards it. */
int cf_stage_probe(struct cf_device *dev);
int cf_op_commit(struct cf_device *dev, const struct cf_bundle *b);
int cf_op_rollback(struct cf_device *dev, const struct cf_bundle *b);
int cf_op_retire(struct cf_device *dev, const struct cf_bundle *b);
int cf_op_trust_signer(struct cf_device *dev, const struct cf_bundle *b);
int cf_op_keygen(struct cf_device *dev, const struct cf_bundle *b);
/** Replace the revoked kids, raise revoked_before; persisted with the seq, `committed`. */
int cf_op_revoke(struct cf_device *dev, const struct cf_bundle *b);
/** Make the keygen's key from the persisted intent (b: the bundle, NULL after a reboot):
 * offline, delete the tag, %KEYGEN, online, persisted as made, `csr` reported. */
int cf_make_key(struct cf_device *dev, const struct cf_bundle *b);

#endif /* CERTFLEET_OPS_H_ */
