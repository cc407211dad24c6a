#!/usr/bin/env bash
# A short tour on the embedded file:// store: create a volume from a raw image,
# inspect it, export it again and check the round trip. Uses ./elide-demo as
# the data directory (removed first).
set -euo pipefail
cd "$(dirname "$0")/.."
export ELIDE_DATA_DIR=./elide-demo
elide() { node bin/run.js "$@"; }
rm -rf "$ELIDE_DATA_DIR" demo.img demo.out
# 64 MiB image: 16 MiB of random data, a 32 MiB hole, 16 MiB of text.
head -c $((16 << 20)) /dev/urandom > demo.img
truncate -s $((48 << 20)) demo.img
yes 'elide demo text, compressible' | head -c $((16 << 20)) >> demo.img
elide volume import-raw demo.img demo
elide volume list
elide volume info demo
elide volume export-raw demo demo.out
cmp demo.img demo.out && echo "round trip: identical"
elide volume delete demo --force
rm -f demo.img demo.out
