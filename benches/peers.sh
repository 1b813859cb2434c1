#!/usr/bin/env bash
# CPU per request beside the proxies banyan is chosen over: banyan, nginx 1.22 and HAProxy
# 2.6 in one run on the same host, for S1 (pass-through) and S2 (a 20 % sticky split on
# X-User-Id: nginx's split_clients, HAProxy's crc32 of the header), first with one
# data-path thread / worker / nbthread, then with two.
#
#   benches/peers.sh [seconds per run, default 10] [connections, default 32] [rounds, default 3]
#
# One thread: each proxy alone on core 0; the upstream (one nginx worker) and wrk on
# core 1, as in load.sh. Two threads: the proxy may use both cores, and so do wrk (two
# threads, twice the connections) and the upstream: on a 2-core host the load generator
# then competes with the proxy, so the two-thread throughput shows CPU per request at two
# threads, not the proxy's scaling (that needs a host where wrk has cores of its own).
# Proxy CPU per request = (utime + stime of the proxy's processes during the run) /
# requests completed; medians of the rounds, which alternate the proxies. Everything
# listens on 127.0.0.1 and is stopped on exit; results also go to benches/results/.
# BANYAN_EXTRA adds lines to banyan's [server] table (`work_stealing = false`, say).
set -euo pipefail

DURATION=${1:-10}
CONNS_ONE=${2:-32}
ROUNDS=${3:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NAME=peers
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"
need nginx haproxy wrk taskset curl

UP_MONO=18781 UP_ORDERS=18782 BANYAN=18780 BANYAN_ADMIN=18790 NGINX=18783 HAPROXY=18784
echo "building banyan (release)..." >&2
(cd "$ROOT" && cargo build --release --quiet)
BIN="$ROOT/target/release/banyan"

DOC='{"id":42,"status":"shipped","total":12.5}'
mkdir -p "$WORK/up"
json_upstreams "$WORK/up" "$UP_MONO" "$DOC" "$UP_ORDERS" "$DOC"
wait_http "http://127.0.0.1:$UP_MONO/"
users_script "$WORK/users.lua"

start_proxies() { # threads cpus: the three proxies, each with that many threads, on those cores
  local threads=$1 cpus=$2 dir="$WORK/t$1"
  mkdir -p "$dir/px" "$dir/banyan/config" "$dir/banyan/routes"
  { nginx_head "$dir/px" | sed "s/^worker_processes 1;/worker_processes $threads;/"
    nginx_split_proxy "$NGINX" "$UP_MONO" "$UP_ORDERS"
    printf '  }\n}\n'
  } > "$dir/px/nginx.conf"
  cat > "$dir/haproxy.cfg" <<EOF
global
  nbthread $threads
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
  option forwardfor
frontend front
  bind 127.0.0.1:$HAPROXY
  acl orders path_beg /api/orders
  acl target req.hdr(x-user-id),crc32,mod(100) lt 20
  use_backend orders if orders target
  default_backend monolith
backend monolith
  server m 127.0.0.1:$UP_MONO
backend orders
  server o 127.0.0.1:$UP_ORDERS
EOF
  banyan_config "$dir/banyan" "$BANYAN" "$BANYAN_ADMIN" "$UP_MONO" "$UP_ORDERS"
  sed -i "s/^threads = 1$/threads = $threads/" "$dir/banyan/config/banyan.toml"
  if [ -n "${BANYAN_EXTRA:-}" ]; then
    sed -i "/^threads = $threads$/a $BANYAN_EXTRA" "$dir/banyan/config/banyan.toml"
  fi
  orders_route "$dir/banyan/routes/orders.toml"
  taskset -c "$cpus" nginx -p "$dir/px" -c "$dir/px/nginx.conf" & PIDS+=($!)
  NGINX_PID=$!
  taskset -c "$cpus" haproxy -db -q -f "$dir/haproxy.cfg" & PIDS+=($!)
  HAPROXY_PID=$!
  (cd "$dir/banyan" && exec taskset -c "$cpus" "$BIN" run > "$dir/banyan.log" 2>&1) & PIDS+=($!)
  BANYAN_PID=$!
  for port in $NGINX $HAPROXY $BANYAN; do
    wait_http "http://127.0.0.1:$port/pass/42"
    wait_http "http://127.0.0.1:$port/api/orders/42"
  done
}

stop_proxies() {
  # HAProxy started in the background of a script ignores SIGINT (bash sets it so).
  kill -INT "$NGINX_PID" "$BANYAN_PID" 2>/dev/null || true
  kill -TERM "$HAPROXY_PID" 2>/dev/null || true
  wait "$NGINX_PID" "$HAPROXY_PID" "$BANYAN_PID" 2>/dev/null || true
}

measure() { # threads: the rounds, alternating the proxies
  local t=$1 r p port pid
  for r in $(seq 1 "$ROUNDS"); do
    echo "$t thread(s), round $r of $ROUNDS..." >&2
    for p in nginx haproxy banyan; do
      case $p in
        nginx) port=$NGINX pid=$NGINX_PID ;;
        haproxy) port=$HAPROXY pid=$HAPROXY_PID ;;
        banyan) port=$BANYAN pid=$BANYAN_PID ;;
      esac
      run "S1-$p-$t" "http://127.0.0.1:$port/pass/42" "$pid"
      run "S2-$p-$t" "http://127.0.0.1:$port" "$pid" -s "$WORK/users.lua"
    done
  done
}

CONNS=$CONNS_ONE
start_proxies 1 0
measure 1
stop_proxies
CONNS=$((CONNS_ONE * 2)) WRK_CPUS=0,1 WRK_THREADS=2
start_proxies 2 0,1
measure 2
stop_proxies

m() { median "$WORK/$1.rounds" "$2"; }
{
  echo "# Peers: CPU per request, banyan beside nginx and HAProxy"
  echo
  echo "Command: benches/peers.sh $DURATION $CONNS_ONE $ROUNDS ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $(date -u +%Y-%m-%dT%H:%MZ))"
  echo "Machine: $(nproc) cores, $(awk '/model name/ {sub(/.*: /, ""); print; exit}' /proc/cpuinfo); $(nginx -v 2>&1 | sed 's/.*: //'), $(haproxy -v | head -1 | cut -d' ' -f1-3)"
  echo "One thread: wrk -t1 -c$CONNS_ONE on core 1 with the upstream, the proxy alone on core 0. Two threads: wrk -t2 -c$((CONNS_ONE * 2)), the upstream and the proxy on both cores."
  echo
  table_head
  for t in 1 2; do for s in S1 S2; do for p in nginx haproxy banyan; do row "$s-$p-$t"; done; done; done
  echo
  for t in 1 2; do
    for s in S1 S2; do
      awk -v s="$s" -v t="$t" -v b="$(m "$s-banyan-$t" 4)" -v n="$(m "$s-nginx-$t" 4)" -v h="$(m "$s-haproxy-$t" 4)" 'BEGIN {
        printf "- %s, %s thread(s): banyan / nginx CPU per request %.2f× (target ≤ 0.95), banyan / HAProxy %.2f× (target ≤ 1.0)\n", s, t, b / n, b / h }'
    done
  done
  for t in 1 2; do
    for s in S1 S2; do
      awk -v s="$s" -v t="$t" -v bu="$(m "$s-banyan-$t" 6)" -v b="$(m "$s-banyan-$t" 4)" -v nu="$(m "$s-nginx-$t" 6)" -v n="$(m "$s-nginx-$t" 4)" -v hu="$(m "$s-haproxy-$t" 6)" -v h="$(m "$s-haproxy-$t" 4)" 'BEGIN {
        printf "- %s, %s thread(s), user / system µs per request: nginx %.2f / %.2f, HAProxy %.2f / %.2f, banyan %.2f / %.2f\n", s, t, nu, n - nu, hu, h - hu, bu, b - bu }'
    done
  done
  for p in nginx haproxy banyan; do
    awk -v p="$p" -v one="$(m "S1-$p-1" 1)" -v two="$(m "S1-$p-2" 1)" 'BEGIN {
      printf "- S1 %s: two threads / one, throughput %.2f× (wrk and the upstream share the two cores)\n", p, two / one }'
  done
} | tee "$ROOT/benches/results/peers-$(date -u +%Y%m%dT%H%M%S).md"
