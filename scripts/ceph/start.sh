#!/usr/bin/env bash
# Starts a throwaway single-node Ceph cluster for the S3 tests: one monitor,
# one memstore OSD (data in RAM, gone when it stops) and radosgw, all on
# 127.0.0.1, with every file under DIR and no systemd. Creates an S3 user with
# a fixed test key pair and prints, as its last line:
#   READY http://127.0.0.1:RGW_PORT ACCESS_KEY SECRET_KEY
# Stop it with scripts/ceph/stop.sh DIR.
#
# usage: start.sh DIR [RGW_PORT] [MON_PORT]   (defaults 7480, 3300; pick free
#        ports so parallel runs do not collide)
# env:   CEPH_MEMSTORE_BYTES  RAM the OSD may hold (default 3 GiB)
#
# Needs Debian's ceph-mon ceph-osd radosgw ceph-common (Ceph 16), uuid-runtime
# and curl (7.75 or later, for --aws-sigv4). Takes about 3 s.
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 3 ]; then
  echo "usage: $0 DIR [RGW_PORT] [MON_PORT]" >&2
  exit 2
fi
DIR=$1
RGW_PORT=${2:-7480}
MON_PORT=${3:-3300}
MEMSTORE_BYTES=${CEPH_MEMSTORE_BYTES:-$((3 * 1024 * 1024 * 1024))}
ACCESS_KEY=ELIDETESTACCESSKEY
SECRET_KEY=elide-test-secret-key
# Seconds each startup step may take; radosgw in particular hangs rather than
# failing when it cannot authenticate to the monitor.
STEP_TIMEOUT=120

missing=()
for tool in ceph-mon ceph-osd radosgw radosgw-admin ceph ceph-authtool monmaptool uuidgen curl timeout; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "start.sh: missing ${missing[*]}; install them with:" >&2
  echo "  apt-get install -y --no-install-recommends ceph-mon ceph-osd radosgw ceph-common uuid-runtime curl" >&2
  exit 127
fi
for port in "$RGW_PORT" "$MON_PORT"; do
  [[ $port =~ ^[0-9]+$ ]] || { echo "start.sh: invalid port '$port'" >&2; exit 2; }
done

DIR=$(mkdir -p "$DIR" && cd "$DIR" && pwd)
if [ -n "$(ls -A "$DIR")" ]; then
  echo "start.sh: $DIR is not empty" >&2
  exit 2
fi
mkdir -p "$DIR"/{mon,osd,log,run,rgw}

# On any failure: say which step failed, show the end of the daemon logs, and
# stop whatever already started.
step=setup
fail() {
  echo "start.sh: failed while: $step" >&2
  for log in "$DIR"/log/*; do
    [ -s "$log" ] || continue
    echo "--- tail of $log" >&2
    tail -n 15 "$log" >&2
  done
  "$(dirname "$0")/stop.sh" "$DIR" >&2 || true
}
trap fail ERR

# Retries `cmd` once a second until it succeeds or STEP_TIMEOUT passes.
wait_for() {
  local deadline=$((SECONDS + STEP_TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      echo "start.sh: timed out after ${STEP_TIMEOUT}s waiting for: $*" >&2
      return 1
    fi
    sleep 0.5
  done
}

FSID=$(uuidgen)
# Notes on the non-obvious settings:
# - auth none everywhere, so radosgw must be told `ms mon client mode = crc`:
#   it forces secure mode otherwise, which needs cephx, and loops forever;
# - tcp_nodelay on the beast frontend: without it small GETs take ~48 ms
#   (Nagle against delayed ACKs) instead of ~5 ms;
# - the monitor proposes map changes every 0.1 s rather than every 1 s: each
#   pool radosgw creates waits for a few proposals, and this cuts the start
#   from ~17 s to ~3 s;
# - the monitor's free-disk guards are off: it would shut down below 5% free
#   on the host disk, which says nothing about a RAM-backed test cluster.
cat >"$DIR/ceph.conf" <<CONF
[global]
fsid = $FSID
mon host = v2:127.0.0.1:$MON_PORT
public addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 0
mon data avail crit = 0
run dir = $DIR/run
log file = $DIR/log/\$name.log
admin socket = $DIR/run/\$name.asok
pid file = $DIR/run/\$name.pid
keyring = $DIR/keyring
[mon]
mon data = $DIR/mon/\$id
paxos propose interval = 0.1
[osd]
osd data = $DIR/osd/\$id
osd objectstore = memstore
memstore device bytes = $MEMSTORE_BYTES
[client.rgw.a]
ms mon client mode = crc
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT tcp_nodelay=1
rgw data = $DIR/rgw
CONF
export CEPH_CONF="$DIR/ceph.conf"

step="creating the monitor"
ceph-authtool --create-keyring "$DIR/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool "$DIR/keyring" --gen-key -n client.admin \
  --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
monmaptool --create --fsid "$FSID" --addv a "[v2:127.0.0.1:$MON_PORT]" "$DIR/monmap" >/dev/null
ceph-mon --mkfs -i a --monmap "$DIR/monmap" --keyring "$DIR/keyring"
step="starting the monitor on port $MON_PORT"
ceph-mon -i a 2>>"$DIR/log/daemons.err" # daemonizes
wait_for ceph -s --connect-timeout 2

step="creating the OSD"
OSD_UUID=$(uuidgen)
OSD_ID=$(timeout $STEP_TIMEOUT ceph osd new "$OSD_UUID")
mkdir -p "$DIR/osd/$OSD_ID"
timeout $STEP_TIMEOUT ceph-osd -i "$OSD_ID" --mkfs --osd-uuid "$OSD_UUID" >"$DIR/log/osd-mkfs.out" 2>&1
step="starting the OSD"
ceph-osd -i "$OSD_ID" 2>>"$DIR/log/daemons.err" # daemonizes
wait_for sh -c "ceph osd stat 2>/dev/null | grep -q '1 up'"

step="starting radosgw on port $RGW_PORT"
# radosgw daemonizes only once it has reached the monitor.
timeout $STEP_TIMEOUT radosgw -n client.rgw.a 2>>"$DIR/log/daemons.err"
wait_for curl -sf -o /dev/null "http://127.0.0.1:$RGW_PORT/"

step="creating the S3 user"
timeout $STEP_TIMEOUT radosgw-admin -n client.admin user create --uid=elide-test \
  --display-name=elide-test --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY" >/dev/null

step="warming up"
# radosgw creates its bucket index and data pools on first use, and each new
# pool takes ~2 s to become active; pay that here rather than in a test.
s3() {
  curl -sf -o /dev/null --aws-sigv4 aws:amz:us-east-1:s3 --user "$ACCESS_KEY:$SECRET_KEY" \
    -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$@"
}
warm="http://127.0.0.1:$RGW_PORT/elide-warm-up"
s3 -X PUT "$warm"
s3 -X PUT --data-binary warm "$warm/object"
s3 -X DELETE "$warm/object"
s3 -X DELETE "$warm"

trap - ERR
echo "READY http://127.0.0.1:$RGW_PORT $ACCESS_KEY $SECRET_KEY"
