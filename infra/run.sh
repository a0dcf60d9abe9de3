#!/usr/bin/env bash
# The main job: installs what is missing, builds, and runs streamlens. With no arguments it runs the
# embedded demo (the sample orders stream replayed live, embedded store, no AWS, no OpenSearch) on
# http://127.0.0.1:3000. Arguments are passed to `streamlens run`, e.g. `--config streamlens.toml`.
source "$(dirname "${BASH_SOURCE[0]}")/scripts/lib.sh"
cd "$ROOT"
bash infra/scripts/install.sh run
bash dashboard/build-client.sh
log "building streamlens"
cargo build --bin streamlens
exec cargo run --quiet --bin streamlens -- run "$@"
