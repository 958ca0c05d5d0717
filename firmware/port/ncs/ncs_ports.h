/*
 * The nRF9160 ports of the certfleet core: the modem's key store (modem_key_mgmt,
 * CFUN through LTE link control), the record in the settings subsystem (NVS), the
 * clock from date_time, and the health probe on the modem's TLS sockets.
 *
 * The MQTT transport is the application's: its publish_report must publish the
 * report (cf_report_json) with QoS 1 and return once the PUBACK came; see README.md.
 */
#ifndef CERTFLEET_NCS_PORTS_H_
#define CERTFLEET_NCS_PORTS_H_

#include "certfleet/clock.h"
#include "certfleet/keystore.h"
#include "certfleet/probe.h"
#include "certfleet/record.h"

struct cf_keystore cf_ncs_keystore(void);
struct cf_record_store cf_ncs_record(void);
struct cf_clock cf_ncs_clock(void);
struct cf_probe cf_ncs_probe(void);

#endif /* CERTFLEET_NCS_PORTS_H_ */
