#!/usr/bin/env bash
# Stops the cluster scripts/ceph/start.sh started in DIR: radosgw, then the
# OSD, then the monitor, each by its pid file, waiting for each to exit
# (SIGKILL after a grace period). Safe to run twice or on a half-started
# cluster. Does not remove DIR.
#
# usage: stop.sh DIR
set -uo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
DIR=$1
# Seconds a daemon gets to exit after SIGTERM.
GRACE=10

# True while `pid` runs. A daemon's parent is PID 1, which may not reap it in a
# container, so an exited daemon can linger as a zombie: that counts as gone.
running() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

stop_pid_file() {
  local file=$1 pid
  [ -s "$file" ] || return 0
  pid=$(cat "$file")
  [[ $pid =~ ^[0-9]+$ ]] || return 0
  # The pid file outlives the daemon; make sure the pid is still a Ceph daemon.
  grep -qE 'ceph|radosgw' "/proc/$pid/cmdline" 2>/dev/null || return 0
  running "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  local deadline=$((SECONDS + GRACE))
  while running "$pid"; do
    if [ $SECONDS -ge $deadline ]; then
      kill -KILL "$pid" 2>/dev/null
      sleep 0.2
      break
    fi
    sleep 0.1
  done
}

for file in "$DIR/run/client.rgw.a.pid" "$DIR"/run/osd.*.pid "$DIR/run/mon.a.pid"; do
  [ -e "$file" ] && stop_pid_file "$file"
done
exit 0
