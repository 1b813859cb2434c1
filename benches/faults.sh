#!/usr/bin/env bash
# Fault benchmark: the extracted service is killed under load, then started again.
# wrk drives banyan (fallback to legacy, circuit breaker) and nginx (`backup` server with
# `proxy_next_upstream error timeout http_502 http_503 http_504`) at the same time, both
# sending every request to the target first; the target is killed at a third of the run
# and started again at two thirds. The table shows what clients saw: failed requests
# (non-2xx answers and socket errors) and latency, for each proxy.
#
#   benches/faults.sh [seconds per run, default 15] [connections per proxy, default 16] [rounds, default 3]
#
# Needs nginx, wrk, curl, taskset, and a release build (the script builds one). Both
# proxies run on core 0, the upstreams and both wrk on core 1; everything listens on
# 127.0.0.1 only and is stopped on exit. Results go to stdout and
# benches/results/faults-<time>.md.
set -euo pipefail

DURATION=${1:-15}
CONNS=${2:-16}
ROUNDS=${3:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NAME=faults
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"
need nginx wrk taskset curl

UP_MONO=18481 UP_ORDERS=18482 BANYAN=18480 BANYAN_ADMIN=18490 NGINX=18580

echo "building banyan (release)..." >&2
(cd "$ROOT" && cargo build --release --quiet)
BIN="$ROOT/target/release/banyan"

mkdir -p "$WORK/mono" "$WORK/orders" "$WORK/px" "$WORK/banyan/config" "$WORK/banyan/routes"
{ nginx_head "$WORK/mono"; cat <<EOF
  server { listen 127.0.0.1:$UP_MONO; location / { default_type application/json; return 200 '{"served_by":"monolith"}'; } }
}
EOF
} > "$WORK/mono/nginx.conf"
{ nginx_head "$WORK/orders"; cat <<EOF
  server { listen 127.0.0.1:$UP_ORDERS; location / { default_type application/json; return 200 '{"served_by":"orders"}'; } }
}
EOF
} > "$WORK/orders/nginx.conf"
taskset -c 1 nginx -p "$WORK/mono" -c "$WORK/mono/nginx.conf" & PIDS+=($!)

ORDERS_PID=
start_orders() {
  taskset -c 1 nginx -p "$WORK/orders" -c "$WORK/orders/nginx.conf" & PIDS+=($!)
  ORDERS_PID=$!
  wait_http "http://127.0.0.1:$UP_ORDERS/"
}
kill_orders() { # as a crash would: workers and master at once
  kill -KILL $(pgrep -P "$ORDERS_PID") "$ORDERS_PID" 2>/dev/null || true
  wait "$ORDERS_PID" 2>/dev/null || true
}

# ---- nginx: orders first, the monolith as backup -------------------------------------
{ nginx_head "$WORK/px"; cat <<EOF
  upstream orders_first {
    server 127.0.0.1:$UP_ORDERS max_fails=5 fail_timeout=1s;
    server 127.0.0.1:$UP_MONO backup;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$NGINX;
    location / {
      proxy_pass http://orders_first;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_connect_timeout 1s;
      proxy_read_timeout 30s;
      proxy_next_upstream error timeout http_502 http_503 http_504;
    }
  }
}
EOF
} > "$WORK/px/nginx.conf"
taskset -c 0 nginx -p "$WORK/px" -c "$WORK/px/nginx.conf" & PIDS+=($!)

# ---- banyan: every request to orders, falling back to the monolith ---------------------
banyan_config "$WORK/banyan" "$BANYAN" "$BANYAN_ADMIN" "$UP_MONO" "$UP_ORDERS"
cat >> "$WORK/banyan/config/banyan.toml" <<EOF
connect_timeout = "1s"
circuit = { failures = 5, cooldown = "1s" }
EOF
cat > "$WORK/banyan/routes/orders.toml" <<EOF
[[route]]
name = "orders"
match.path_prefix = "/"
legacy = "monolith"
target = "orders"
percent = 100
EOF
(cd "$WORK/banyan" && exec taskset -c 0 "$BIN" run > /dev/null) & PIDS+=($!)

start_orders
wait_http "http://127.0.0.1:$UP_MONO/"
wait_http "http://127.0.0.1:$NGINX/api/orders/1"
wait_http "http://127.0.0.1:$BANYAN/api/orders/1"
for port in $NGINX $BANYAN; do
  curl -s "http://127.0.0.1:$port/api/orders/1" | grep -q orders || { echo "port $port does not reach orders" >&2; exit 1; }
done

# "failed p50 p99 rps" of one wrk output.
summarize() {
  awk '
    /Non-2xx/ { bad += $NF }
    /Socket errors/ { gsub(",", ""); bad += $4 + $6 + $8 + $10 }
    $1=="50%" || $1=="99%" { v=$2; if (v ~ /us$/) v=v/1000; else if (v ~ /ms$/) v=v+0; else if (v ~ /s$/) v=v*1000; p[$1]=v }
    /Requests\/sec/ { rps=$2 }
    END { printf "%d %.3f %.3f %.0f\n", bad, p["50%"], p["99%"], rps }'
}

for r in $(seq 1 "$ROUNDS"); do
  echo "round $r of $ROUNDS..." >&2
  taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:$NGINX/api/orders/1" > "$WORK/nginx.out" &
  W1=$!
  taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:$BANYAN/api/orders/1" > "$WORK/banyan.out" &
  W2=$!
  sleep "$(echo "$DURATION / 3" | bc -l)"
  kill_orders
  sleep "$(echo "$DURATION / 3" | bc -l)"
  start_orders
  wait "$W1" "$W2"
  summarize < "$WORK/nginx.out" >> "$WORK/nginx.rounds"
  summarize < "$WORK/banyan.out" >> "$WORK/banyan.rounds"
done

fallbacks=$(curl -s "http://127.0.0.1:$BANYAN_ADMIN/metrics" | awk '/^banyan_fallbacks_total/ {printf "%s%s=%s", (n++ ? ", " : ""), $1, $2}')
{
  echo "Load: two wrk -t1 -c$CONNS -d${DURATION}s at once (one per proxy), GET /api/orders/1; the target killed at ${DURATION}/3 s and started again at 2×${DURATION}/3 s; $ROUNDS rounds"
  echo "Machine: $(nproc) cores, $(awk '/model name/ {sub(/.*: /, ""); print; exit}' /proc/cpuinfo); both proxies on core 0, upstreams and wrk on core 1"
  echo "Date: $(date -u +%Y-%m-%dT%H:%MZ), banyan $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $(nginx -v 2>&1)"
  echo
  echo "| proxy | failed requests per round | p50 (median) | p99 (median) | p99 per round | req/s (median) |"
  echo "|---|---|---|---|---|---|"
  for p in nginx banyan; do
    f="$WORK/$p.rounds"
    printf "| %s | %s | %s ms | %s ms | %s | %s |\n" "$p" \
      "$(awk '{printf "%s%s", (NR>1 ? ", " : ""), $1}' "$f")" "$(median "$f" 2)" "$(median "$f" 3)" \
      "$(awk '{printf "%s%s", (NR>1 ? ", " : ""), $3}' "$f")" "$(median "$f" 4)"
  done
  echo
  echo "banyan's fallbacks over all rounds: $fallbacks"
} | tee "$ROOT/benches/results/faults-$(date -u +%Y%m%dT%H%M%S).md"
