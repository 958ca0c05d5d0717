#!/bin/sh
# Runs mosquitto, and restarts it when certfleet has replaced the CRL file.
#
# Mosquitto 2.0 reads `crlfile` at start and on SIGHUP only, never by itself, and a
# SIGHUP is not safe while devices keep offline sessions: 2.0.11 handles those
# sessions again on every reload and can crash soon after (docs/operations.md,
# "Rotating device identities"). So the broker is restarted instead: SIGTERM (it
# saves its sessions and queued messages), then started again on the same config;
# devices and services reconnect, and every new connection is checked against the
# new CRL. certfleet replaces the file atomically when it revokes old identities and
# when it re-signs the CRL before its nextUpdate. This script, the broker's command
# in deploy/compose.yaml, looks at the file every CRL_CHECK_SECONDS, waits until it
# has not changed for CRL_SETTLE_SECONDS (a burst of writes is one restart), and
# restarts at most once every CRL_RESTART_MIN_SECONDS. When mosquitto exits by itself
# the script exits with it, and the container's restart policy takes over.
#
#   MOSQUITTO_CONF           the broker's config        (/mosquitto/config/mosquitto.conf)
#   CRL_FILE                 its crlfile                (/mosquitto/crl/devices.crl.pem)
#   CRL_CHECK_SECONDS        how often to look          (5)
#   CRL_SETTLE_SECONDS       unchanged this long first  (10)
#   CRL_RESTART_MIN_SECONDS  between two restarts       (60)
set -u
conf="${MOSQUITTO_CONF:-/mosquitto/config/mosquitto.conf}"
crl="${CRL_FILE:-/mosquitto/crl/devices.crl.pem}"
every="${CRL_CHECK_SECONDS:-5}"
settle="${CRL_SETTLE_SECONDS:-10}"
spacing="${CRL_RESTART_MIN_SECONDS:-60}"

say() { echo "run-with-crl-reload: $*" >&2; }
stamp() { stat -c '%i %Y %s' "$crl" 2>/dev/null || echo missing; }
now() { date +%s; }

# Mosquitto exits at once when its crlfile is missing: wait for certfleet's first CRL.
if [ ! -s "$crl" ]; then
  say "waiting for $crl (see docs/operations.md, the CRL file)"
  while [ ! -s "$crl" ]; do sleep "$every"; done
fi

start_broker() {
  mosquitto -c "$conf" &
  broker=$!
  started=$(now)
}

stopping=""
trap 'stopping=1; kill -TERM "$broker" 2>/dev/null' TERM INT
loaded=$(stamp)
start_broker
seen=$loaded
seen_at=$(now)
while :; do
  sleep "$every" &
  wait $! 2>/dev/null # returns at once when a signal arrives
  [ -n "$stopping" ] && break
  kill -0 "$broker" 2>/dev/null || break # mosquitto exited by itself
  current=$(stamp)
  if [ "$current" != "$seen" ]; then # changed since the last look: let it settle
    seen=$current
    seen_at=$(now)
    continue
  fi
  if [ "$current" != "$loaded" ] && [ "$current" != missing ] &&
    [ $(($(now) - seen_at)) -ge "$settle" ] && [ $(($(now) - started)) -ge "$spacing" ]; then
    say "$crl changed; restarting mosquitto to load it"
    kill -TERM "$broker" 2>/dev/null
    wait "$broker"
    [ -n "$stopping" ] && exit 0
    loaded=$current
    start_broker
  fi
done
wait "$broker"
