#!/usr/bin/env bash
# Installs what streamlens needs and is missing. `install.sh run` installs what the demo needs
# (the wasm toolchain for the dashboard bundle); `install.sh test` adds the local services
# (moto, osmem-server), Chromium and playwright-core for the tests. Safe to run again.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
what="${1:-run}"

command -v cargo >/dev/null || die "cargo is missing: install Rust from rustup.rs first"
command -v curl >/dev/null || apt_install curl

if [ "$what" = "test" ]; then
  if ! command -v moto_server >/dev/null || [ -z "$(osmem_bin)" ]; then
    log "pip install moto[server] osmem-server"
    python3 -m pip install -q 'moto[server]' osmem-server
  fi
  [ -x /usr/bin/chromium ] || apt_install chromium
  command -v node >/dev/null || apt_install nodejs npm
  if [ ! -d "$ROOT/node_modules/playwright-core" ]; then
    log "npm ci (playwright-core; no browser download)"
    (cd "$ROOT" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
  fi
  command -v cargo-nextest >/dev/null || { log "cargo install cargo-nextest"; cargo install --locked cargo-nextest; }
fi
# The dashboard bundle's toolchain is set up by its build script.
