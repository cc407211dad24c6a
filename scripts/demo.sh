#!/usr/bin/env bash
# A short tour on the embedded file:// store: create a volume from a raw image,
# serve it over NBD (checking it with nbdinfo/qemu-img when they are
# installed), stop the server cleanly, export the volume and check the round
# trip. Uses ./elide-demo as the data directory (removed first).
set -euo pipefail
cd "$(dirname "$0")/.."
export ELIDE_DATA_DIR=./elide-demo
elide() { node bin/run.js "$@"; }
rm -rf "$ELIDE_DATA_DIR" demo.img demo.out demo.serve.log
# 64 MiB image: 16 MiB of random data, a 32 MiB hole, 16 MiB of text.
head -c $((16 << 20)) /dev/urandom > demo.img
truncate -s $((48 << 20)) demo.img
{ yes 'elide demo text, compressible' || true; } | head -c $((16 << 20)) >> demo.img
elide volume import-raw demo.img demo
elide volume list

# Run node itself in the background (not the shell function) so $! is the server.
node bin/run.js serve nbd demo --listen 127.0.0.1:0 2> demo.serve.log &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do grep -q 'serving' demo.serve.log && break; sleep 0.1; done
uri=$(grep -o 'nbd://[^ ]*' demo.serve.log | head -n 1)
echo "serving $uri"
if command -v nbdinfo >/dev/null; then nbdinfo --map "$uri"; fi
if command -v qemu-img >/dev/null; then qemu-img compare -f raw -F raw demo.img "$uri"; fi
kill -TERM $server && wait $server
trap - EXIT

elide volume info demo
elide volume export-raw demo demo.out
cmp demo.img demo.out && echo "round trip: identical"
elide volume delete demo --force
rm -f demo.img demo.out demo.serve.log
