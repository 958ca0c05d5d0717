#!/bin/sh
# Runs mosquitto and sends it SIGHUP whenever certfleet replaces the CRL file.
#
# Mosquitto 2.0 reads `crlfile` at start and on SIGHUP only, never by itself.
# certfleet replaces the file atomically (a new inode each time) when it revokes a
# device certificate and when it re-signs the CRL before its nextUpdate. This
# script, the broker's command in deploy/compose.yaml, looks at the file every
# CRL_CHECK_SECONDS and signals the broker when it changed, so a revocation counts
# for new connections within seconds. Connections already open stay open: mosquitto
# checks a client certificate only when the client connects.
#
#   MOSQUITTO_CONF     the broker's config   (/mosquitto/config/mosquitto.conf)
#   CRL_FILE           its crlfile           (/mosquitto/crl/devices.crl.pem)
#   CRL_CHECK_SECONDS  how often to look     (5)
set -u
conf="${MOSQUITTO_CONF:-/mosquitto/config/mosquitto.conf}"
crl="${CRL_FILE:-/mosquitto/crl/devices.crl.pem}"
every="${CRL_CHECK_SECONDS:-5}"

stamp() { stat -c '%i %Y %s' "$crl" 2>/dev/null || echo missing; }

# Mosquitto exits at once when its crlfile is missing: wait for certfleet's first CRL.
if [ ! -s "$crl" ]; then
  echo "run-with-crl-reload: waiting for $crl (see docs/operations.md, the CRL file)" >&2
  while [ ! -s "$crl" ]; do sleep "$every"; done
fi

mosquitto -c "$conf" &
broker=$!
trap 'kill -TERM "$broker" 2>/dev/null' TERM INT
trap 'kill -HUP "$broker" 2>/dev/null' HUP
last=$(stamp)
while kill -0 "$broker" 2>/dev/null; do
  sleep "$every" &
  wait $! 2>/dev/null # returns at once when a signal arrives
  now=$(stamp)
  if [ "$now" != "$last" ] && [ "$now" != missing ]; then
    echo "run-with-crl-reload: $crl changed; reloading mosquitto" >&2
    kill -HUP "$broker" 2>/dev/null
    last=$now
  fi
done
wait "$broker"
