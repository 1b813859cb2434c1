#!/usr/bin/env bash
# Whole-proxy load benchmark: wrk through banyan and through nginx, both doing the same
# 20 % sticky split on X-User-Id to the same two upstreams, in one run.
#
#   benches/load.sh [seconds per run, default 10] [connections, default 32] [rounds, default 3]
#
# Rounds alternate nginx and banyan; the table shows each figure's median.
# Layout on a 2-core machine: the proxy under test alone on core 0; the upstreams (one
# nginx, 1 worker) and wrk on core 1. Proxy CPU per request = (utime + stime of all the
# proxy's processes during the run) / requests completed. Needs: nginx, wrk, taskset,
# and a release build (the script builds one). Everything listens on 127.0.0.1 only and
# is stopped on exit. Results go to stdout and benches/results/load-<time>.md.
set -euo pipefail

DURATION=${1:-10}
CONNS=${2:-32}
ROUNDS=${3:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NAME=load
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"
need nginx wrk taskset curl

UP_MONO=18181 UP_ORDERS=18182 BANYAN=18180 BANYAN_ADMIN=18190 NGINX=18280 FLOOR=18380

echo "building banyan (release)..." >&2
(cd "$ROOT" && cargo build --release --quiet && cargo build --release --quiet --example pingora_floor)
BIN="$ROOT/target/release/banyan"

# ---- upstreams: one nginx, two servers answering a small JSON body ------------------
mkdir -p "$WORK/up" "$WORK/px" "$WORK/banyan/config" "$WORK/banyan/routes"
{ nginx_head "$WORK/up"; cat <<EOF
  server { listen 127.0.0.1:$UP_MONO;   location / { default_type application/json; return 200 '{"served_by":"monolith","ok":true}'; } }
  server { listen 127.0.0.1:$UP_ORDERS; location / { default_type application/json; return 200 '{"served_by":"orders","ok":true}'; } }
}
EOF
} > "$WORK/up/nginx.conf"
taskset -c 1 nginx -p "$WORK/up" -c "$WORK/up/nginx.conf" & PIDS+=($!)

# ---- nginx as the proxy: split_clients on X-User-Id, 20 % to orders -----------------
{ nginx_head "$WORK/px"; cat <<EOF
  upstream monolith { server 127.0.0.1:$UP_MONO;   keepalive 64; }
  upstream orders   { server 127.0.0.1:$UP_ORDERS; keepalive 64; }
  split_clients "\${http_x_user_id}" \$backend { 20% orders; * monolith; }
  server {
    listen 127.0.0.1:$NGINX;
    location /api/orders {
      proxy_pass http://\$backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$host;
    }
    location / {
      proxy_pass http://monolith;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
} > "$WORK/px/nginx.conf"
taskset -c 0 nginx -p "$WORK/px" -c "$WORK/px/nginx.conf" & PIDS+=($!)
NGINX_MASTER=$!

# ---- banyan: the same split, one worker thread --------------------------------------
banyan_config "$WORK/banyan" "$BANYAN" "$BANYAN_ADMIN" "$UP_MONO" "$UP_ORDERS"
cat > "$WORK/banyan/routes/orders.toml" <<EOF
[[route]]
name = "orders"
match.path_prefix = "/api/orders"
legacy = "monolith"
target = "orders"
percent = 20
sticky = "header:x-user-id"
EOF
(cd "$WORK/banyan" && exec taskset -c 0 "$BIN" run > /dev/null) & PIDS+=($!)
BANYAN_PID=$!

# ---- the least possible Pingora proxy (no split: always monolith), for reference ------
taskset -c 0 "$ROOT/target/release/examples/pingora_floor" "127.0.0.1:$FLOOR" "127.0.0.1:$UP_MONO" 2>/dev/null & PIDS+=($!)
FLOOR_PID=$!

wait_http "http://127.0.0.1:$UP_MONO/"
wait_http "http://127.0.0.1:$NGINX/api/orders/1"
wait_http "http://127.0.0.1:$BANYAN/api/orders/1"
wait_http "http://127.0.0.1:$FLOOR/api/orders/1"

# Both proxies really split: ~20 % of 500 users on orders.
for port in $BANYAN $NGINX; do
  n=0
  for i in $(seq 1 500); do
    curl -s "http://127.0.0.1:$port/api/orders/1" -H "X-User-Id: u$i" | grep -q '"orders"' && n=$((n+1))
  done
  echo "sanity: port $port sent $n of 500 users to orders" >&2
done

cat > "$WORK/users.lua" <<'EOF'
-- One of 100,000 users per request, so the split sees many distinct keys.
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "/api/orders/42", { ["X-User-Id"] = "user-" .. (counter * 7919 % 100000) })
end
EOF

for r in $(seq 1 "$ROUNDS"); do
  echo "round $r of $ROUNDS..." >&2
  run nginx "http://127.0.0.1:$NGINX" "$NGINX_MASTER" -s "$WORK/users.lua"
  run banyan "http://127.0.0.1:$BANYAN" "$BANYAN_PID" -s "$WORK/users.lua"
  run pingora-floor "http://127.0.0.1:$FLOOR" "$FLOOR_PID" -s "$WORK/users.lua"
done

{
  echo "pingora-floor: the least possible Pingora proxy (examples/pingora_floor.rs), no split, for reference."
  echo "Load: wrk -t1 -c$CONNS -d${DURATION}s × $ROUNDS rounds, GET /api/orders/42 with 100,000 distinct X-User-Id, 20 % sticky split"
  echo "Machine: $(nproc) cores, $(awk '/model name/ {sub(/.*: /, ""); print; exit}' /proc/cpuinfo); proxy pinned to core 0, upstream nginx + wrk on core 1"
  echo "Date: $(date -u +%Y-%m-%dT%H:%MZ), banyan $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $(nginx -v 2>&1)"
  echo
  table_head
  row nginx
  row banyan
  row pingora-floor
  echo
  awk -v b="$(median "$WORK/banyan.rounds" 4)" -v n="$(median "$WORK/nginx.rounds" 4)" 'BEGIN { printf "banyan / nginx CPU per request: %.2f× (medians of %d rounds)\n", b / n, '"$ROUNDS"' }'
} | tee "$ROOT/benches/results/load-$(date -u +%Y%m%dT%H%M%S).md"
