#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: repeatable whatever else the
# host does (the wall-clock A/B in ab.sh is at the mercy of steal on a shared VM). For
# each binary and scenario, banyan runs under callgrind twice, serving LOW and then HIGH
# keep-alive requests from one curl; the difference over HIGH - LOW is what one request
# costs, start-up and shutdown cancelled out.
#
#   benches/instructions.sh <binary> [<binary>...]     (LOW=500 HIGH=2500 by default)
#
# Scenarios: S1 pass-through (/pass), S2 the 20 % sticky split (/api/orders with
# X-User-Id), S1 over TLS (HTTP/1.1 on the TLS listener: Pingora's path, with banyan
# following the request bytes), and S3 (S1 plus a 100 % shadow with comparison: the
# copies' work on the shadow worker's thread is counted too). SCENARIOS="s1 s3" runs
# some of them. Needs valgrind, nginx, curl, openssl. Everything listens on 127.0.0.1 and
# is stopped on exit.
set -euo pipefail

LOW=${LOW:-500}
SCENARIOS=$(echo "${SCENARIOS:-s1 s2 tls s3}" | tr "[:upper:]" "[:lower:]")
HIGH=${HIGH:-2500}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NAME=instructions
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"
need valgrind nginx curl openssl

UP_MONO=18881 UP_ORDERS=18882 PORT=18880 ADMIN=18890 TLS_PORT=18883
DOC='{"id":42,"status":"shipped","total":12.5}'
mkdir -p "$WORK/up" "$WORK/b/config" "$WORK/b/routes"
json_upstreams "$WORK/up" "$UP_MONO" "$DOC" "$UP_ORDERS" "$DOC"
banyan_config "$WORK/b" "$PORT" "$ADMIN" "$UP_MONO" "$UP_ORDERS"
orders_route "$WORK/b/routes/orders.toml"
mirrored_route > "$WORK/b/routes/mirrored.toml"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
  -keyout "$WORK/b/key.pem" -out "$WORK/b/cert.pem" 2>/dev/null
# The TLS listener is a table of `[server]`: it goes right after the server's keys.
sed -i "/^default_upstream/a [server.tls]\nlisten = \"127.0.0.1:$TLS_PORT\"\ncert = \"cert.pem\"\nkey = \"key.pem\"" "$WORK/b/config/banyan.toml"
wait_http "http://127.0.0.1:$UP_MONO/"

count() { # binary requests url [curl args]: callgrind's total for a run serving that many
  # (the binary runs from its config's folder, so a relative path is resolved first)
  local given=$1 bin n=$2 url=$3 out="$WORK/cg.out" pid
  bin=$(realpath -m "$given")
  shift 3
  rm -f "$out"
  (cd "$WORK/b" && exec valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" run > /dev/null 2>&1) &
  pid=$!
  for _ in $(seq 1 300); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/ready" && break; sleep 0.2; done
  curl -s -o /dev/null "$@" "$url[1-$n]"
  kill -INT "$pid"
  wait "$pid" || true
  [ -s "$out" ] || { echo "instructions: $given did not run under callgrind" >&2; return 1; }
  awk '/^summary:/ {print $2}' "$out"
}

{
  echo "# Instructions per request (callgrind), $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "Command: LOW=$LOW HIGH=$HIGH SCENARIOS=\"$SCENARIOS\" benches/instructions.sh $*"
  echo
  head="| binary |" rule="|---|"
  for s in $SCENARIOS; do
    case $s in
      s1) head="$head S1 pass-through |" ;;
      s2) head="$head S2 split |" ;;
      tls) head="$head S1 over TLS |" ;;
      s3) head="$head S3 shadow + compare |" ;;
    esac
    rule="$rule---|"
  done
  echo "$head"
  echo "$rule"
  for bin in "$@"; do
    row=""
    for s in $SCENARIOS; do
      case $s in
        s1) url="http://127.0.0.1:$PORT/pass/"; args=() ;;
        s2) url="http://127.0.0.1:$PORT/api/orders/"; args=(-H "X-User-Id: user-7") ;;
        tls) url="https://127.0.0.1:$TLS_PORT/pass/"; args=(-k --http1.1) ;;
        s3) url="http://127.0.0.1:$PORT/mirrored/"; args=() ;;
      esac
      lo=$(count "$bin" "$LOW" "$url" "${args[@]}")
      hi=$(count "$bin" "$HIGH" "$url" "${args[@]}")
      row="$row | $(( (hi - lo) / (HIGH - LOW) ))"
    done
    echo "| $bin$row |"
  done
} | tee "$ROOT/benches/results/instructions-$(date -u +%Y%m%dT%H%M).md"
