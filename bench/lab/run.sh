#!/bin/sh
# The lab's figures, per data plane: `svcnet lab up` to a passing `svcnet lab check`, and the
# LoadBalancer failover (a client on vm-1 loops requests to the LB address node-1 announces;
# `lab fail node-1`; from the start of the first failed request to the start of the first good
# one, and to the first of 20 good requests in a row).
# Needs root. Runs the end-to-end test RUNS times (default 3), which prints the figures.
set -eu
cd "$(dirname "$0")/../.."
cargo test -q -p svcnet --test lab_e2e --no-run
for run in $(seq 1 "${RUNS:-3}"); do
    echo "== run $run"
    cargo test -q -p svcnet --test lab_e2e -- --nocapture 2>&1 | grep '^lab\['
done
