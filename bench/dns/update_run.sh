#!/usr/bin/env bash
# Time from a change to the new zone snapshot being visible to readers, at 10,000 Services and
# PODS pods (verified pod records): a full `Zone::build` (what every watch batch did before
# incremental updates) against `ZoneBuilder` applying one change and swapping the snapshot in.
# In-process, no network. Run it under /work/q, with the example built beforehand:
#   cargo build --release -p svcnet-dns --example zone_update
# Usage: ZONE_UPDATE=target/release/examples/zone_update [PODS=50000] [CHANGES=200] \
#        bench/dns/update_run.sh
set -euo pipefail

ZONE_UPDATE=${ZONE_UPDATE:?set ZONE_UPDATE to the release zone_update example}
PODS=${PODS:-50000}
CHANGES=${CHANGES:-200}
WORK=$(mktemp -d /tmp/svcnet-dns-update.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

python3 "$(dirname "$0")/gen.py" "$WORK" 5353 "$PODS"
echo "== $(date -u +%FT%TZ) $(nproc) CPUs, $(uname -r)"
"$ZONE_UPDATE" "$WORK/objects.json" "$CHANGES"
