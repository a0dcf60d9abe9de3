#!/usr/bin/env bash
# Every test: installs what is missing, starts moto and osmem-server, builds the dashboard bundle,
# then runs the whole workspace's tests (unit, end-to-end against the services, browser) with nextest.
source "$(dirname "${BASH_SOURCE[0]}")/scripts/lib.sh"
cd "$ROOT"
bash infra/scripts/install.sh test
bash infra/scripts/services.sh start
trap 'bash infra/scripts/services.sh stop' EXIT
bash dashboard/build-client.sh
log "running the tests"
cargo nextest run --workspace --no-fail-fast "$@"
