#!/usr/bin/env bash
# Control-plane benchmarks, release build, everything on 127.0.0.1:
#
#   benches/control.sh [rollback cycles, default 50] [wrk seconds, default 10] [p99 rounds, default 3]
#
# 1. `banyan rollback` end to end: process start to exit (the API answers after the new
#    snapshot is live), median and p90 over N rollback/resume cycles.
# 2. A 10,000-route table: from the atomic rename of the file to a request served by the
#    new snapshot (probed every 2 ms), median of 5; and the proxy's own load+compile time.
# 3. Data-path p99 under wrk with and without a route-file reload every 100 ms, rounds
#    alternating, medians compared (single runs differ by more than the effect).
# Needs nginx (upstream), wrk, curl, taskset. Results: stdout and benches/results/.
set -euo pipefail

CYCLES=${1:-50}
DURATION=${2:-10}
ROUNDS=${3:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NAME=control
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"
need nginx wrk curl taskset python3 bc

UP=18481 PROXY=18480 ADMIN=18490
echo "building banyan (release)..." >&2
(cd "$ROOT" && cargo build --release --quiet)
BIN="$ROOT/target/release/banyan"

mkdir -p "$WORK/up" "$WORK/b/config" "$WORK/b/routes"
{ nginx_head "$WORK/up"; cat <<EOF
  server { listen 127.0.0.1:$UP; location / { default_type application/json; return 200 '{"ok":true}'; } }
}
EOF
} > "$WORK/up/nginx.conf"
taskset -c 1 nginx -p "$WORK/up" -c "$WORK/up/nginx.conf" & PIDS+=($!)

cat > "$WORK/b/config/banyan.toml" <<EOF
[server]
listen = ["127.0.0.1:$PROXY"]
threads = 1
default_upstream = "monolith"
debug_headers = true
[admin]
listen = "127.0.0.1:$ADMIN"
[upstreams.monolith]
peers = ["127.0.0.1:$UP"]
[upstreams.orders]
peers = ["127.0.0.1:$UP"]
EOF
route() { # percent
  printf '[[route]]\nname = "orders"\nmatch.path_prefix = "/api/orders"\nlegacy = "monolith"\ntarget = "orders"\npercent = %s\nsticky = "header:x-user-id"\n' "$1"
}
route 20 > "$WORK/b/routes/orders.toml"
(cd "$WORK/b" && exec taskset -c 0 "$BIN" run > /dev/null 2> "$WORK/banyan.log") & PIDS+=($!)
wait_http "http://127.0.0.1:$ADMIN/healthz"

ms_now() { date +%s%N; }
median_p90() { # values on stdin → "median p90"
  grep -v '^$' | sort -g | awk '{v[NR]=$1} END {m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; p=v[int(NR*0.9+0.999)]; printf "%.1f %.1f\n", m, p}'
}

# ---- 1. rollback end to end ---------------------------------------------------------
: > "$WORK/rollback.ms"
for _ in $(seq 1 "$CYCLES"); do
  t0=$(ms_now)
  (cd "$WORK/b" && "$BIN" rollback orders --reason bench >/dev/null)
  t1=$(ms_now)
  echo "scale=3; ($t1 - $t0) / 1000000" | bc >> "$WORK/rollback.ms"
  # The effect: the very next request goes to legacy.
  curl -s "http://127.0.0.1:$ADMIN/api/v1/status" | grep -q '"effective_percent": 0.0' || { echo "rollback not applied" >&2; exit 1; }
  (cd "$WORK/b" && "$BIN" resume orders >/dev/null)
done
read -r RB_MED RB_P90 < <(median_p90 < "$WORK/rollback.ms")

# ---- 2. 10,000 routes, file write to live --------------------------------------------
python3 - "$WORK/routes10k.toml" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    for i in range(10000):
        m = f'match.path_regex = "^/re{i}/v[0-9]+"' if i % 50 == 49 else f'match.path_prefix = "/svc{i}/api"'
        f.write(f'[[route]]\nname = "r{i}"\n{m}\ntarget = "orders"\npercent = {i % 100}\nsticky = "header:x-user-id"\n\n')
PY
# Probed through the proxy: the snapshot a tiny request is served by (a status document
# of 10,000 routes is itself megabytes).
snapshot() { curl -s -o /dev/null -D - "http://127.0.0.1:$PROXY/svc7/api/x" | awk -F': ' 'tolower($1)=="x-banyan-snapshot" {print $2+0}'; }
: > "$WORK/reload10k.ms"; : > "$WORK/compile10k.ms"
for i in 1 2 3 4 5; do
  s0=$(snapshot)
  cp "$WORK/routes10k.toml" "$WORK/b/routes/.big.tmp"
  sed -i "s/^percent = 7$/percent = $((7 + i))/" "$WORK/b/routes/.big.tmp"
  t0=$(ms_now)
  mv "$WORK/b/routes/.big.tmp" "$WORK/b/routes/big.toml"
  for _ in $(seq 1 5000); do
    [ "$(snapshot)" -gt "$s0" ] && break
    sleep 0.002
  done
  t1=$(ms_now)
  echo "scale=3; ($t1 - $t0) / 1000000" | bc >> "$WORK/reload10k.ms"
  sleep 0.3
  grep 'route files reloaded' "$WORK/banyan.log" | tail -1 | sed 's/.*ms="\([0-9.]*\)".*/\1/' >> "$WORK/compile10k.ms"
done
read -r BIG_MED BIG_P90 < <(median_p90 < "$WORK/reload10k.ms")
read -r COMPILE_MED _ < <(median_p90 < "$WORK/compile10k.ms")
rm -f "$WORK/b/routes/big.toml"
sleep 0.5

# ---- 3. data-path p99 with and without reloads every 100 ms ---------------------------
users_script "$WORK/users.lua"
p99() { echo "$1" | awk '$1=="99%" {v=$2; if (v ~ /us$/) v=v/1000; else if (v ~ /ms$/) v=v+0; else if (v ~ /s$/) v=v*1000; printf "%.3f", v}'; }
taskset -c 1 wrk -t1 -c32 -d2s -s "$WORK/users.lua" "http://127.0.0.1:$PROXY" >/dev/null
# One long-lived writer on the load generator's core, so that the reloads measured are
# banyan's own work and not the benchmark forking processes next to the proxy.
cat > "$WORK/reloader.py" <<'PY'
import os, sys, time
folder, seconds = sys.argv[1], float(sys.argv[2])
end, n = time.time() + seconds, 0
while time.time() < end and n < 1000:
    n += 1
    tmp = os.path.join(folder, ".orders.tmp")
    with open(tmp, "w") as f:
        f.write('[[route]]\nname = "orders"\nmatch.path_prefix = "/api/orders"\nlegacy = "monolith"\n'
                'target = "orders"\npercent = %d\nsticky = "header:x-user-id"\n' % (10 + n % 80))
    os.rename(tmp, os.path.join(folder, "orders.toml"))
    time.sleep(0.1)
PY
reloader() { taskset -c 1 python3 "$WORK/reloader.py" "$WORK/b/routes" "$((DURATION + 1))"; }
: > "$WORK/p99.quiet"; : > "$WORK/p99.busy"; ERRS=""
for r in $(seq 1 "$ROUNDS"); do
  echo "p99 round $r of $ROUNDS..." >&2
  out=$(taskset -c 1 wrk -t1 -c32 -d"${DURATION}s" --latency -s "$WORK/users.lua" "http://127.0.0.1:$PROXY")
  echo "$(p99 "$out")" >> "$WORK/p99.quiet"
  reloader & RELOADER=$!
  out=$(taskset -c 1 wrk -t1 -c32 -d"${DURATION}s" --latency -s "$WORK/users.lua" "http://127.0.0.1:$PROXY")
  wait $RELOADER
  echo "$(p99 "$out")" >> "$WORK/p99.busy"
  ERRS="$ERRS$(echo "$out" | grep -E "Non-2xx|Socket errors" || true)"
done
RELOADS=$(grep -c 'route files reloaded' "$WORK/banyan.log")
read -r P99_QUIET _ < <(median_p90 < "$WORK/p99.quiet")
read -r P99_BUSY _ < <(median_p90 < "$WORK/p99.busy")
QUIET_ALL=$(paste -sd, "$WORK/p99.quiet"); BUSY_ALL=$(paste -sd, "$WORK/p99.busy")

{
  echo "Control plane, $(date -u +%Y-%m-%dT%H:%MZ), banyan $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores"
  echo
  echo "| measure | median | p90 | target |"
  echo "|---|---|---|---|"
  echo "| \`banyan rollback\` end to end ($CYCLES runs) | $RB_MED ms | $RB_P90 ms | ≤ 50 ms |"
  echo "| 10,000-route file, rename to live (5 runs) | $BIG_MED ms | $BIG_P90 ms | ≤ 200 ms |"
  echo "| … of which load + compile in the proxy | $COMPILE_MED ms | | |"
  echo
  echo "| wrk -c32 ${DURATION}s, $ROUNDS rounds alternating | p99 median | each round |"
  echo "|---|---|---|"
  echo "| no reloads | $P99_QUIET ms | $QUIET_ALL |"
  echo "| a reload every 100 ms ($RELOADS reloads in all) | $P99_BUSY ms | $BUSY_ALL |"
  echo
  awk -v a="$P99_BUSY" -v b="$P99_QUIET" 'BEGIN { printf "p99 with reloads / without: %.2f (target ≤ 1.10)\n", a / b }'
  [ -z "$ERRS" ] || echo "errors under reloads: $ERRS"
} | tee "$ROOT/benches/results/control-$(date -u +%Y%m%dT%H%M%S).md"
