#!/usr/bin/env bash
# Starts (or stops) the local services the tests use: moto (DynamoDB + DynamoDB Streams) on
# $MOTO_PORT and osmem-server (OpenSearch API) on $OPENSEARCH_PORT. Already running ones are kept.
#   infra/scripts/services.sh start | stop
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
state="$ROOT/target/services"
mkdir -p "$state"

start() {
  if curl -fsS -o /dev/null "$STREAMLENS_MOTO_URL/moto-api/" 2>/dev/null; then
    log "moto already answers on $STREAMLENS_MOTO_URL"
  else
    command -v moto_server >/dev/null || die "moto_server not found: run infra/scripts/install.sh test"
    log "starting moto on $STREAMLENS_MOTO_URL"
    nohup moto_server -H 127.0.0.1 -p "$MOTO_PORT" >"$state/moto.log" 2>&1 &
    echo $! >"$state/moto.pid"
    wait_http "$STREAMLENS_MOTO_URL/moto-api/" 60 || die "moto did not start; see $state/moto.log"
  fi
  if curl -fsS -o /dev/null "$STREAMLENS_OPENSEARCH_URL" 2>/dev/null; then
    log "opensearch already answers on $STREAMLENS_OPENSEARCH_URL"
  else
    osmem="$(osmem_bin)"
    [ -n "$osmem" ] || die "osmem-server not found: run infra/scripts/install.sh test"
    log "starting osmem-server on $STREAMLENS_OPENSEARCH_URL"
    nohup "$osmem" --addr "127.0.0.1:$OPENSEARCH_PORT" --no-stdin-watch --no-ja \
      >"$state/osmem.log" 2>&1 </dev/null &
    echo $! >"$state/osmem.pid"
    wait_http "$STREAMLENS_OPENSEARCH_URL" 60 || die "osmem-server did not start; see $state/osmem.log"
  fi
}

stop() {
  for name in moto osmem; do
    if [ -f "$state/$name.pid" ]; then
      kill "$(cat "$state/$name.pid")" 2>/dev/null || true
      rm -f "$state/$name.pid"
    fi
  done
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) die "usage: services.sh start|stop" ;;
esac
