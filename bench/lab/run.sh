#!/bin/sh
# The lab's two figures, per data plane: `svcnet lab up` to a passing `svcnet lab check`, and the
# LoadBalancer failover time (a client on vm-1 loops requests to the LB address node-1 announces;
# `lab fail node-1`; time from the first failed to the first good request).
# Needs root. Runs the end-to-end test, which prints both figures.
set -eu
cd "$(dirname "$0")/../.."
cargo test -p svcnet --test lab_e2e -- --nocapture 2>&1 | grep '^lab\['
