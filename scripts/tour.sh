#!/usr/bin/env bash
# The README's "A short tour", run for real: every line of its code block, in
# order, on a throwaway data directory, with a made-up disk.img and ./layout.
# test/e2e/cli/tour.test.ts runs it and checks that the README shows exactly
# the quoted lines below, so the two cannot drift. Small helpers do what a
# person does by hand:
#   run      runs the line as it is
#   refused  runs it and requires it to fail (the README says it is refused)
#   serve    starts the server in the background, as a second terminal would,
#            on a free port, and waits for its ready line; the next run,
#            refused or serve line stops it with SIGINT (it must exit 0)
#   client   runs an NBD client against that server: the README's default
#            address is replaced by the server's real one
#   pull     runs a line that pulls from Docker Hub; ELIDE_TOUR_IMAGE, when
#            set, replaces docker://debian:bookworm-slim (the test points it
#            at a registry of its own: CI has no internet)
#   shown    only prints the line: the tour runs on the tree as built
# Needs qemu-img and umoci. Usage: npm ci && npm run build && bash scripts/tour.sh
set -euo pipefail
shopt -s expand_aliases
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/elide-tour.XXXXXX")
export ELIDE_DATA_DIR="$work/data"
server=""
address=""
cleanup() {
  if [ -n "$server" ]; then kill -KILL "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

say() { printf '$ %s\n' "$1"; }
stop_server() {
  [ -n "$server" ] || return 0
  kill -INT "$server"
  local status=0
  wait "$server" || status=$?
  server=""
  if [ "$status" -ne 0 ]; then
    echo "tour: serve nbd exited with status $status on SIGINT:" >&2
    cat "$work/serve.log" >&2
    exit 1
  fi
}
run() { stop_server; say "$1"; eval "$1"; }
refused() {
  stop_server
  say "$1"
  if eval "$1"; then
    echo "tour: expected that to be refused" >&2
    exit 1
  fi
}
shown() { say "$1"; }
serve() {
  stop_server
  say "$1"
  local words
  eval "words=(${1%%#*})" # the line's words, variables expanded, without its comment
  if [ "${words[0]}" != elide ] || [ "${words[1]}" != serve ]; then
    echo "tour: not a serve line: $1" >&2
    exit 1
  fi
  node "$repo/bin/run.js" "${words[@]:1}" --listen 127.0.0.1:0 2> "$work/serve.log" &
  server=$!
  for _ in $(seq 1 200); do
    if grep -q '^elide: serving' "$work/serve.log"; then break; fi
    if ! kill -0 "$server" 2> /dev/null; then break; fi
    sleep 0.1
  done
  address=$(grep -o 'nbd://[^/ ]*' "$work/serve.log" | head -n 1 || true)
  if [ -z "$address" ]; then
    echo "tour: serve nbd printed no ready line:" >&2
    cat "$work/serve.log" >&2
    exit 1
  fi
}
client() { say "$1"; eval "${1//nbd:\/\/127.0.0.1:10809/$address}"; }
pull() { run "${1//docker:\/\/debian:bookworm-slim/${ELIDE_TOUR_IMAGE:-docker://debian:bookworm-slim}}"; }

cd "$work"
# disk.img: 64 MiB, 16 MiB of it random data (the zeros are skipped on import).
head -c $((16 << 20)) /dev/urandom > disk.img
truncate -s $((64 << 20)) disk.img
# ./layout: an OCI image layout holding an arm64 image tagged v2.
mkdir -p tree/etc
echo 'elide tour' > tree/etc/motd
rootless=()
if [ "$(id -u)" -ne 0 ]; then rootless=(--rootless); fi
umoci init --layout layout
umoci new --image layout:v2
umoci config --image layout:v2 --architecture arm64
umoci insert "${rootless[@]}" --image layout:v2 tree /

# ---- the tour (README.md, "A short tour") ----
shown 'npm ci && npm run build'
cd "$repo" # $PWD in the alias is the checkout
run 'alias elide="node $PWD/bin/run.js"     # or: npm link'
cd "$work"

run 'elide volume init vm1 --size 10G       # sizes: bytes, 512M, 10G, 2T (rounded up to 4 KiB)'
run 'elide volume list                      # table; --json prints an array'
run 'elide volume import-raw disk.img base  # new volume sized to the image; zero blocks are skipped'
run 'elide volume info base --json          # {name, size, writtenBytes, storedBytes, walBytes, segments, ...}'
run 'elide volume export-raw base copy.img  # sparse file, replaced only once complete; use - for stdout'
run 'elide volume sync base                 # upload everything pending; exit 0 once nothing is'
run 'elide volume evict base                # drop cached bodies the store holds (reads fetch again)'
run 'elide volume delete vm1                # refuses a volume holding data unless --force'

serve 'elide serve nbd base                   # foreground; prints nbd://127.0.0.1:10809/base when ready'
client 'qemu-img info nbd://127.0.0.1:10809/base   # from another terminal; any NBD client: qemu, nbdinfo, nbdcopy, fio, nbdfuse'

run 'id=$(elide snapshot create base --label golden)   # prints the snapshot id (a ULID)'
run 'elide snapshot list base               # table; --json prints [{id, label, createdAt, seq, segments, forks}]'
serve 'elide serve nbd base@$id               # a snapshot, exported read-only'
run 'elide volume init vm2 --from base      # a writable fork of the latest snapshot of base (one is taken if base changed)'
run 'elide volume init vm3 --from base@$id  # ... or of a given snapshot; nothing is copied'
refused 'elide snapshot delete base $id         # refused while forks of it exist (vm2 and vm3 here)'
run 'elide gc --all                         # for cron: quiet on success, one stderr line on failure'

pull 'elide import-oci docker://debian:bookworm-slim deb    # a read-only volume holding an ext4 rootfs'
run 'elide import-oci oci:./layout:v2 app --platform linux/arm64 --json'
run 'elide volume init vm4 --from deb       # boot a writable fork of it'
# ---- end of the tour ----
stop_server
echo 'tour: every line ran'
