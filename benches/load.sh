#!/usr/bin/env bash
# Whole-proxy load benchmark, banyan and nginx side by side in one run, four scenarios:
#   S1 pass-through (no route matches: the default upstream)
#   S2 20 % sticky split on X-User-Id (nginx: split_clients)
#   S3 S1 plus a 100 % shadow with comparison on (nginx: `mirror`, which cannot compare)
#   S4 1,000 routes, the request matching one near the end (nginx: 1,000 locations)
# and the least possible Pingora proxy on S1 for reference. Then RSS: each proxy idle,
# and holding 1,000 idle keep-alive connections. Last, a second banyan writing its access
# log serves S1 and S3 paced once more, to split each request's time into the proxy's own
# and its wait for the upstream (whose core also serves the shadow copies).
#
#   benches/load.sh [seconds per run, default 10] [connections, default 32] [rounds, default 3]
#
# Rounds alternate the proxies; the tables show medians. S1 and S3 are also run paced
# (each connection waits PACE_MS, default 4 ms, between requests: below saturation), so
# S3's client p99 shows what mirroring adds to a client's wait rather than how much
# sooner the CPU runs out. Layout on a 2-core machine: the proxy under test alone on
# core 0; the upstreams (one nginx, 1 worker) and wrk on core 1. Proxy CPU per request =
# (utime + stime of all the proxy's processes during the run) / requests completed.
# Needs: nginx, wrk, taskset, curl, python3, and a release build (the script builds one).
# Everything listens on 127.0.0.1 only and is stopped on exit. Results go to stdout and
# benches/results/load-<time>.md. BANYAN_EXTRA adds lines to banyan's [server] table (to
# measure a setting, say `work_stealing = true`).
set -euo pipefail

DURATION=${1:-10}
CONNS=${2:-32}
ROUNDS=${3:-3}
PACE_MS=${PACE_MS:-4}
ROUTES=1000
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NAME=load
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"
need nginx wrk taskset curl python3

UP_MONO=18181 UP_ORDERS=18182 BANYAN=18180 BANYAN_ADMIN=18190 NGINX=18280 FLOOR=18380

echo "building banyan (release)..." >&2
(cd "$ROOT" && cargo build --release --quiet && cargo build --release --quiet --example pingora_floor)
BIN="$ROOT/target/release/banyan"

# ---- upstreams: one nginx, two servers answering the same small JSON body -------------
DOC='{"id":42,"status":"shipped","total":12.5}'
mkdir -p "$WORK/up" "$WORK/px" "$WORK/banyan/config" "$WORK/banyan/routes"
json_upstreams "$WORK/up" "$UP_MONO" "$DOC" "$UP_ORDERS" "$DOC"

# ---- nginx as the proxy ---------------------------------------------------------------
many_locations() {
  for i in $(seq 0 $((ROUTES - 1))); do
    printf '    location /svc%04d { proxy_pass http://monolith; }\n' "$i"
  done
}
{ nginx_head "$WORK/px"; nginx_split_proxy "$NGINX" "$UP_MONO" "$UP_ORDERS"; cat <<EOF
    location /mirrored { mirror /_mirror; proxy_pass http://monolith; }
    location = /_mirror { internal; proxy_pass http://orders\$request_uri; }
$(many_locations)
  }
}
EOF
} > "$WORK/px/nginx.conf"
taskset -c 0 nginx -p "$WORK/px" -c "$WORK/px/nginx.conf" & PIDS+=($!)
NGINX_MASTER=$!

# ---- banyan: the same routes, one data-path thread, product defaults otherwise --------
banyan_config "$WORK/banyan" "$BANYAN" "$BANYAN_ADMIN" "$UP_MONO" "$UP_ORDERS"
if [ -n "${BANYAN_EXTRA:-}" ]; then
  sed -i "/^threads = 1$/a $BANYAN_EXTRA" "$WORK/banyan/config/banyan.toml"
fi
orders_route "$WORK/banyan/routes/orders.toml"
mirrored_route > "$WORK/banyan/routes/mirrored.toml"
for i in $(seq 0 $((ROUTES - 1))); do
  printf '[[route]]\nname = "svc%04d"\nmatch.path_prefix = "/svc%04d"\nlegacy = "monolith"\ntarget = "orders"\npercent = 0\n\n' "$i" "$i"
done > "$WORK/banyan/routes/many.toml"
(cd "$WORK/banyan" && exec taskset -c 0 "$BIN" run > /dev/null) & PIDS+=($!)
BANYAN_PID=$!

taskset -c 0 "$ROOT/target/release/examples/pingora_floor" "127.0.0.1:$FLOOR" "127.0.0.1:$UP_MONO" 2>/dev/null & PIDS+=($!)
FLOOR_PID=$!

wait_http "http://127.0.0.1:$UP_MONO/"
S4_PATH=$(printf '/svc%04d/items/42' $((ROUTES - 10)))
for port in $NGINX $BANYAN; do
  for path in /pass/42 /api/orders/42 /mirrored/42 "$S4_PATH"; do wait_http "http://127.0.0.1:$port$path"; done
done
wait_http "http://127.0.0.1:$FLOOR/pass/42"

# Sanity: banyan splits (~20 % of 500 users on orders) and matched S4's route.
for i in $(seq 1 500); do
  curl -s -o /dev/null "http://127.0.0.1:$BANYAN/api/orders/1" -H "X-User-Id: u$i"
done
split=$(curl -s "http://127.0.0.1:$BANYAN_ADMIN/metrics" | awk '/^banyan_requests_total\{.*route="orders"/ {split($0, a, "backend=\""); split(a[2], b, "\""); n[b[1]] += $NF} END {printf "legacy %d, target %d", n["legacy"], n["target"]}')
echo "sanity: banyan's orders route after 500 users: $split" >&2
S4_ROUTE=$(printf 'svc%04d' $((ROUTES - 10)))
metrics=$(curl -s "http://127.0.0.1:$BANYAN_ADMIN/metrics")
grep -q "route=\"$S4_ROUTE\"" <<< "$metrics" || { echo "S4's route did not match in banyan" >&2; exit 1; }

users_script "$WORK/users.lua"
printf 'function delay() return %d end\n' "$PACE_MS" > "$WORK/paced.lua"

for r in $(seq 1 "$ROUNDS"); do
  echo "round $r of $ROUNDS..." >&2
  for p in nginx banyan; do
    if [ $p = nginx ]; then port=$NGINX pid=$NGINX_MASTER; else port=$BANYAN pid=$BANYAN_PID; fi
    run "S1-$p" "http://127.0.0.1:$port/pass/42" "$pid"
    run "S2-$p" "http://127.0.0.1:$port" "$pid" -s "$WORK/users.lua"
    [ $p = banyan ] && export COUNT=shadows_completed
    run "S3-$p" "http://127.0.0.1:$port/mirrored/42" "$pid"
    unset COUNT
    run "S4-$p" "http://127.0.0.1:$port$S4_PATH" "$pid"
    run "S1paced-$p" "http://127.0.0.1:$port/pass/42" "$pid" -s "$WORK/paced.lua"
    [ $p = banyan ] && export COUNT=shadows_completed
    run "S3paced-$p" "http://127.0.0.1:$port/mirrored/42" "$pid" -s "$WORK/paced.lua"
    unset COUNT
  done
  run S1-pingora-floor "http://127.0.0.1:$FLOOR/pass/42" "$FLOOR_PID"
done
shadowed=$(curl -s "http://127.0.0.1:$BANYAN_ADMIN/metrics" | awk '/^banyan_shadow_requests_total\{.*route="mirrored"/ {split($0, a, "outcome=\""); split(a[2], b, "\""); printf "%s %d ", b[1], $NF}')

# ---- Where S3's extra client wait comes from ---------------------------------------------
# A second banyan, the same but writing its access log, serves S1 and S3 paced once more:
# each request's time inside the proxy (duration_ms - upstream_ms) against its wait for
# the upstream, whose core also serves every shadow copy. (The access log costs CPU, so
# these runs are apart from the measured ones.)
LOG_PROXY=18183 LOG_ADMIN=18193
mkdir -p "$WORK/banyan-log/config"
cp -r "$WORK/banyan/routes" "$WORK/banyan-log/routes"
banyan_config "$WORK/banyan-log" "$LOG_PROXY" "$LOG_ADMIN" "$UP_MONO" "$UP_ORDERS"
sed -i "/^threads = 1$/a access_log = \"$WORK/access.log\"" "$WORK/banyan-log/config/banyan.toml"
(cd "$WORK/banyan-log" && exec taskset -c 0 "$BIN" run > /dev/null) & PIDS+=($!)
wait_http "http://127.0.0.1:$LOG_PROXY/pass/42"
for scenario in S1:/pass/42 S3:/mirrored/42; do
  url="http://127.0.0.1:$LOG_PROXY${scenario#*:}"
  taskset -c 1 wrk -t1 -c"$CONNS" -d2s -s "$WORK/paced.lua" "$url" > /dev/null
  : > "$WORK/access.log"
  taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$WORK/paced.lua" "$url" > /dev/null
  cp "$WORK/access.log" "$WORK/access.${scenario%%:*}"
done
SPLIT_TABLE=$(python3 - "$WORK/access.S1" "$WORK/access.S3" <<'EOF'
import json, sys
def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p))] if v else float("nan")
print("| paced, banyan | requests | in the proxy p50 / p99 | waiting for the upstream p50 / p99 | total p50 / p99 |")
print("|---|---|---|---|---|")
for name, path in (("S1", sys.argv[1]), ("S3", sys.argv[2])):
    rows = []
    for line in open(path):
        d = json.loads(line)
        if d.get("upstream_ms") is not None:
            rows.append((d["duration_ms"] - d["upstream_ms"], d["upstream_ms"], d["duration_ms"]))
    cols = list(zip(*rows)) or [[], [], []]
    cells = " | ".join(f"{pct(c, .5):.3f} / {pct(c, .99):.3f} ms" for c in cols)
    print(f"| {name} | {len(rows)} | {cells} |")
EOF
)

# ---- RSS: idle, then holding 1,000 idle keep-alive connections -------------------------
cat > "$WORK/idle.py" <<'EOF'
# Opens N keep-alive connections, sends one request on each and reads the whole answer,
# then holds them all open until stdin closes.
import socket, sys
port, n, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
conns = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(10)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    data = b""
    while not data.endswith(b"}"):
        chunk = s.recv(4096)
        if not chunk:
            sys.exit(f"connection closed after {len(conns)} connections")
        data += chunk
    conns.append(s)
print("open", flush=True)
sys.stdin.read()
EOF
rss_row() { # name port pid
  local idle held fifo="$WORK/hold.$1" py
  idle=$(rss_kib "$3")
  mkfifo "$fifo"
  taskset -c 1 python3 "$WORK/idle.py" "$2" 1000 /pass/42 < "$fifo" > "$WORK/idle.$1.out" &
  py=$!
  PIDS+=("$py")
  exec 9> "$fifo"
  for _ in $(seq 1 300); do grep -q open "$WORK/idle.$1.out" 2>/dev/null && break; sleep 0.1; done
  grep -q open "$WORK/idle.$1.out" || { echo "$1: could not open 1,000 connections" >&2; exit 1; }
  held=$(rss_kib "$3")
  exec 9>&-
  wait "$py" || true
  awk -v n="$1" -v i="$idle" -v h="$held" 'BEGIN { printf "| %s | %.1f MiB | %.1f MiB |\n", n, i / 1024, h / 1024 }'
}
RSS_TABLE=$(
  echo "| proxy | RSS idle (after the runs) | RSS holding 1,000 idle keep-alive connections |"
  echo "|---|---|---|"
  rss_row nginx $NGINX $NGINX_MASTER
  rss_row banyan $BANYAN $BANYAN_PID
)

m() { median "$WORK/$1.rounds" "$2"; }
{
  echo "Load: wrk -t1 -c$CONNS -d${DURATION}s × $ROUNDS rounds; S2 spreads 100,000 X-User-Id values; paced runs wait ${PACE_MS} ms per connection between requests"
  echo "Machine: $(nproc) cores, $(awk '/model name/ {sub(/.*: /, ""); print; exit}' /proc/cpuinfo); proxy pinned to core 0, upstream nginx + wrk on core 1"
  echo "Date: $(date -u +%Y-%m-%dT%H:%MZ), banyan $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')${BANYAN_EXTRA:+ with $BANYAN_EXTRA}, $(nginx -v 2>&1)"
  echo "banyan shadow outcomes on S3's route, all runs: $shadowed"
  echo "banyan shadows completed per client request (median of rounds): S3 $(median "$WORK/S3-banyan.counted" 1), S3 paced $(median "$WORK/S3paced-banyan.counted" 1)"
  echo
  table_head
  for s in S1 S2 S3 S4; do row "$s-nginx"; row "$s-banyan"; done
  row S1-pingora-floor
  echo
  echo "Paced (p99 is the client's wait at a load below saturation):"
  echo
  table_head
  for s in S1paced S3paced; do row "$s-nginx"; row "$s-banyan"; done
  echo
  echo "Where the paced client's wait goes (a second banyan writing its access log, S1 and S3 paced once more):"
  echo
  echo "$SPLIT_TABLE"
  echo
  echo "$RSS_TABLE"
  echo
  awk -v s1="$(m S1-banyan 4)" -v s2="$(m S2-banyan 4)" -v s3="$(m S3-banyan 4)" -v s4="$(m S4-banyan 4)" \
      -v n1="$(m S1-nginx 4)" -v n2="$(m S2-nginx 4)" -v n3="$(m S3-nginx 4)" \
      -v p1="$(m S1paced-banyan 3)" -v p3="$(m S3paced-banyan 3)" -v f="$(m S1-pingora-floor 4)" \
      -v c1="$(m S1paced-banyan 4)" -v c3="$(m S3paced-banyan 4)" -v cn3="$(m S3paced-nginx 4)" 'BEGIN {
    printf "- S1 banyan / nginx CPU per request: %.2f× (target ≤ 1.0, interim ≤ 1.3)\n", s1 / n1
    printf "- S2 banyan / nginx CPU per request: %.2f× (target ≤ 1.0, interim ≤ 1.3)\n", s2 / n2
    printf "- S3 banyan / nginx mirror CPU per request: %.2f× (target ≤ 0.5; see shadows completed above)\n", s3 / n3
    printf "- S3 / S1 banyan client p99, paced: %.2f× (target ≤ 1.10)\n", p3 / p1
    printf "- S3 / S1 banyan CPU per request, paced (every shadow completed): %.2f× (issue 4: ≤ 1.8); S3 paced banyan / nginx mirror: %.2f× (target ≤ 0.5)\n", c3 / c1, c3 / cn3
    printf "- S4 / S1 banyan CPU per request: %.2f× (target ≤ 1.10)\n", s4 / s1
    printf "- Pingora floor / nginx, S1: %.2f×\n", f / n1
  }'
} | tee "$ROOT/benches/results/load-$(date -u +%Y%m%dT%H%M%S).md"
