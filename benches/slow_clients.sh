#!/usr/bin/env bash
# Slow clients against banyan and nginx: while N connections (default 5,000) trickle an
# endless request head one byte per second (benches/trickle.py, reopening each one the
# proxy closes), other clients run wrk against the proxy. Reported per proxy: those
# clients' req/s, p50 and p99 with and without the flood, the proxy's RSS idle, at the
# flood's peak and after it, and what the trickler saw (connections the proxy closed).
#
#   benches/slow_clients.sh [trickling connections, default 5000] [flood seconds, default 40]
#   TLS=1 benches/slow_clients.sh ...     the same over TLS (HTTP/1.1; both proxies with one
#                                         self-signed P-256 certificate)
#
# Both proxies cut a head at 10 s (banyan's client_header_timeout default; nginx set to
# match). Layout: the proxy under test on core 0; the upstream (nginx, 1 worker), wrk and
# the trickler on core 1. wrk runs 10 s with 32 connections, paced (4 ms between a
# connection's requests) so that the figures are latency below saturation. Everything
# listens on 127.0.0.1 and is stopped on exit; results go to benches/results/.
set -euo pipefail

N=${1:-5000}
FLOOD=${2:-40}
TLS=${TLS:-0}
DURATION=10
CONNS=32
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NAME=slow_clients
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"
need nginx wrk taskset curl python3
ulimit -n "$(ulimit -Hn)"  # every trickling connection is a descriptor in each process

UP=18681 BANYAN=18680 BANYAN_ADMIN=18690 NGINX=18780 BANYAN_TLS=18683 NGINX_TLS=18783
SCHEME=http BANYAN_AT=$BANYAN NGINX_AT=$NGINX TRICKLE_TLS=""
if [ "$TLS" = 1 ]; then
  need openssl
  SCHEME=https BANYAN_AT=$BANYAN_TLS NGINX_AT=$NGINX_TLS TRICKLE_TLS=tls
fi
echo "building banyan (release)..." >&2
(cd "$ROOT" && cargo build --release --quiet)
BIN="$ROOT/target/release/banyan"

DOC='{"id":42,"status":"shipped","total":12.5}'
mkdir -p "$WORK/up" "$WORK/px" "$WORK/banyan/config" "$WORK/banyan/routes"
json_upstreams "$WORK/up" "$UP" "$DOC"
{ nginx_head "$WORK/px" | sed "s/worker_connections 4096/worker_connections $((N * 2 + 1000))/"; cat <<EOF
  client_header_timeout 10s;
  upstream monolith { server 127.0.0.1:$UP; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX backlog=16384;
    listen 127.0.0.1:$NGINX_TLS ssl backlog=16384;
    ssl_certificate $WORK/cert.pem;
    ssl_certificate_key $WORK/key.pem;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    location / { proxy_pass http://monolith; }
  }
}
EOF
} > "$WORK/px/nginx.conf"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
taskset -c 0 nginx -p "$WORK/px" -c "$WORK/px/nginx.conf" & PIDS+=($!)
NGINX_PID=$!
banyan_config "$WORK/banyan" "$BANYAN" "$BANYAN_ADMIN" "$UP" "$UP"
sed -i "/^default_upstream/a [server.tls]\nlisten = \"127.0.0.1:$BANYAN_TLS\"\ncert = \"$WORK/cert.pem\"\nkey = \"$WORK/key.pem\"" "$WORK/banyan/config/banyan.toml"
(cd "$WORK/banyan" && exec taskset -c 0 "$BIN" run > /dev/null 2>&1) & PIDS+=($!)
BANYAN_PID=$!
wait_http "http://127.0.0.1:$UP/"
wait_http "http://127.0.0.1:$BANYAN/pass"
wait_http "http://127.0.0.1:$NGINX/pass"
printf 'function delay() return 4 end\n' > "$WORK/paced.lua"

peak() { # pid seconds: the highest RSS (KiB) seen over that long
  local max=0 v
  for _ in $(seq 1 $(($2 * 4))); do
    v=$(rss_kib "$1"); [ "$v" -gt "$max" ] && max=$v
    sleep 0.25
  done
  echo "$max"
}

measure() { # name port pid
  local name=$1 port=$2 pid=$3 idle flooded after out
  WARMUP=1 run "$name-quiet" "$SCHEME://127.0.0.1:$port/pass" "$pid" -s "$WORK/paced.lua"
  idle=$(rss_kib "$pid")
  taskset -c 1 python3 "$ROOT/benches/trickle.py" 127.0.0.1 "$port" "$N" "$FLOOD" 1 $TRICKLE_TLS > "$WORK/$name.trickle" & local tp=$!
  # Let the flood build up (every connection open and trickling), then measure under it.
  flooded=$(peak "$pid" 12)
  WARMUP=1 run "$name-flood" "$SCHEME://127.0.0.1:$port/pass" "$pid" -s "$WORK/paced.lua"
  local more
  more=$(peak "$pid" 2)
  [ "$more" -gt "$flooded" ] && flooded=$more
  wait "$tp"
  sleep 2
  after=$(rss_kib "$pid")
  echo "$name $idle $flooded $after" >> "$WORK/rss"
}

measure banyan "$BANYAN_AT" "$BANYAN_PID"
measure nginx "$NGINX_AT" "$NGINX_PID"
cut=$(curl -s "http://127.0.0.1:$BANYAN_ADMIN/metrics" | awk '/^banyan_client_timeouts_total\{phase="header"\}/ {print $NF}')

{
  echo "# Slow clients, $(date -u +%Y-%m-%dT%H:%MZ), $N trickling connections for ${FLOOD}s ($SCHEME)"
  echo
  echo "Command: TLS=$TLS benches/slow_clients.sh $N $FLOOD ($(nproc) cores); $(nginx -v 2>&1)"
  echo
  echo "Other clients (wrk, $CONNS connections, paced 4 ms), quiet and under the flood:"
  echo
  table_head
  for p in banyan nginx; do row "$p-quiet"; row "$p-flood"; done
  echo
  echo "| proxy | RSS idle | RSS under the flood (peak) | RSS after | trickler |"
  echo "|---|---|---|---|---|"
  while read -r p idle flooded after; do
    awk -v p="$p" -v i="$idle" -v f="$flooded" -v a="$after" -v t="$(cat "$WORK/$p.trickle")" \
      'BEGIN { printf "| %s | %.1f MiB | %.1f MiB | %.1f MiB | %s |\n", p, i / 1024, f / 1024, a / 1024, t }'
  done < "$WORK/rss"
  echo
  echo "banyan_client_timeouts_total{phase=\"header\"}: ${cut:-0}"
} | tee "$ROOT/benches/results/slow_clients-$(date -u +%Y%m%dT%H%M).md"
