# Shared helpers for the infra scripts. Source it; do not run it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export MOTO_PORT="${MOTO_PORT:-5000}"
export OPENSEARCH_PORT="${OPENSEARCH_PORT:-9200}"
export STREAMLENS_MOTO_URL="${STREAMLENS_MOTO_URL:-http://127.0.0.1:${MOTO_PORT}}"
export STREAMLENS_OPENSEARCH_URL="${STREAMLENS_OPENSEARCH_URL:-http://127.0.0.1:${OPENSEARCH_PORT}}"
export STREAMLENS_SITE_ROOT="${STREAMLENS_SITE_ROOT:-$ROOT/target/site}"
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

log() { printf '\033[1;34m[streamlens]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[streamlens] error:\033[0m %s\n' "$*" >&2; exit 1; }

# The Python user scripts directory may not be on PATH (pip --user, pyenv).
python_bin_dirs() {
  python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true
  python3 -c 'import site; print(site.getuserbase() + "/bin")' 2>/dev/null || true
}
for d in $(python_bin_dirs) "$HOME/.cargo/bin"; do
  case ":$PATH:" in *":$d:"*) ;; *) PATH="$PATH:$d" ;; esac
done
export PATH

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    log "apt-get update"
    apt-get update -qq >/dev/null
    apt_updated=1
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

wait_http() { # url seconds
  local url="$1" secs="$2" i
  for ((i = 0; i < secs * 10; i++)); do
    if curl -fsS -o /dev/null "$url" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

# The osmem-server binary ships inside its Python package.
osmem_bin() {
  if [ -n "${OSMEM_SERVER_BIN:-}" ]; then echo "$OSMEM_SERVER_BIN"; return; fi
  command -v osmem-server 2>/dev/null && return
  python3 -c 'import osmem_server; print(osmem_server.resolve_binary())' 2>/dev/null
}
