#!/usr/bin/env bash
# Where the CPU per request goes, banyan beside nginx: perf samples of each proxy under
# the same load, as nanoseconds per request in the kernel and in user space, and the
# kernel functions where banyan spends most more, and most less, than nginx. The peer
# benchmark (peers.sh) says how much CPU each proxy takes; this says where.
#
#   benches/kernel.sh [s1|s2, default s1] [threads: 1 or 2, default 1] [seconds, default 5]
#
# Placement as in peers.sh: with one thread the proxy is alone on core 0, the upstream
# (one nginx worker) and wrk -c32 on core 1; with two, everything shares both cores and
# wrk runs -t2 -c64. perf samples the proxy's processes (cpu-clock, 4,999 Hz) for the
# middle of a run; perf's own cost inflates both proxies alike, so compare the two
# columns, not the figures with peers.sh's. Needs perf (Debian: linux-perf), nginx, wrk,
# python3. Everything listens on 127.0.0.1 and is stopped on exit; the summary also goes
# to benches/results/kernel-<time>.md.
set -euo pipefail

SCENARIO=${1:-s1}
THREADS=${2:-1}
DURATION=${3:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NAME=kernel
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"
need perf nginx wrk taskset curl python3

UP_MONO=18981 UP_ORDERS=18982 BANYAN=18980 BANYAN_ADMIN=18990 NGINX=18983
echo "building banyan (release)..." >&2
(cd "$ROOT" && cargo build --release --quiet)
BIN="$ROOT/target/release/banyan"

DOC='{"id":42,"status":"shipped","total":12.5}'
mkdir -p "$WORK/up" "$WORK/px" "$WORK/banyan/config" "$WORK/banyan/routes"
json_upstreams "$WORK/up" "$UP_MONO" "$DOC" "$UP_ORDERS" "$DOC"
wait_http "http://127.0.0.1:$UP_MONO/"
users_script "$WORK/users.lua"

if [ "$THREADS" = 1 ]; then PROXY_CPUS=0 WRK=(taskset -c 1 wrk -t1 -c32)
else PROXY_CPUS=0,1 WRK=(taskset -c 0,1 wrk -t2 -c64); fi
{ nginx_head "$WORK/px" | sed "s/^worker_processes 1;/worker_processes $THREADS;/"
  nginx_split_proxy "$NGINX" "$UP_MONO" "$UP_ORDERS"
  printf '  }\n}\n'
} > "$WORK/px/nginx.conf"
banyan_config "$WORK/banyan" "$BANYAN" "$BANYAN_ADMIN" "$UP_MONO" "$UP_ORDERS"
sed -i "s/^threads = 1$/threads = $THREADS/" "$WORK/banyan/config/banyan.toml"
orders_route "$WORK/banyan/routes/orders.toml"
taskset -c "$PROXY_CPUS" nginx -p "$WORK/px" -c "$WORK/px/nginx.conf" & PIDS+=($!)
NGINX_PID=$!
(cd "$WORK/banyan" && exec taskset -c "$PROXY_CPUS" "$BIN" run > "$WORK/banyan.log" 2>&1) & PIDS+=($!)
BANYAN_PID=$!
for port in $NGINX $BANYAN; do wait_http "http://127.0.0.1:$port/api/orders/42"; done

for p in nginx banyan; do
  case $p in
    nginx) port=$NGINX pids=$(pgrep -P "$NGINX_PID" | paste -sd,) ;;
    banyan) port=$BANYAN pids=$BANYAN_PID ;;
  esac
  case $SCENARIO in
    s1) url="http://127.0.0.1:$port/pass/42" args=() ;;
    *) url="http://127.0.0.1:$port" args=(-s "$WORK/users.lua") ;;
  esac
  echo "$p: profiling $DURATION s of $SCENARIO with $THREADS thread(s)..." >&2
  "${WRK[@]}" -d2s "${args[@]}" "$url" > /dev/null
  # wrk runs 2 s longer than perf samples, 1 s on each side; requests are counted over
  # perf's window from wrk's rate.
  "${WRK[@]}" -d$((DURATION + 2))s "${args[@]}" "$url" > "$WORK/wrk-$p.txt" &
  wrk_pid=$!
  sleep 1
  perf record -q -e cpu-clock -F 4999 -p "$pids" -o "$WORK/perf-$p.data" -- sleep "$DURATION" 2>/dev/null
  wait "$wrk_pid"
  perf report -i "$WORK/perf-$p.data" --no-children --sort sym --stdio 2>/dev/null > "$WORK/report-$p.txt"
done

python3 - "$WORK" "$DURATION" "$SCENARIO" "$THREADS" <<'EOF' | tee "$ROOT/benches/results/kernel-$(date -u +%Y%m%dT%H%M%S).md"
import re, sys
work, seconds, scenario, threads = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]

def load(p):
    rps = float(re.search(r'Requests/sec:\s+([\d.]+)', open(f'{work}/wrk-{p}.txt').read()).group(1))
    report = open(f'{work}/report-{p}.txt').read()
    # cpu-clock counts nanoseconds: the event count is the CPU time sampled.
    cpu_ns = int(re.search(r'# Event count \(approx.\): (\d+)', report).group(1))
    per_req = cpu_ns / (rps * seconds)
    funcs = {}
    for line in report.splitlines():
        m = re.match(r'\s+([\d.]+)%\s+\[(.)\]\s+(.+)', line)
        if m:
            key = ('kernel' if m.group(2) == 'k' else 'user', m.group(3).strip()[:70])
            funcs[key] = funcs.get(key, 0) + float(m.group(1)) / 100 * per_req
    return rps, funcs

runs = {p: load(p) for p in ('nginx', 'banyan')}
print(f'# Where the CPU per request goes: {scenario.upper()}, {threads} thread(s)')
print()
print('Command: benches/kernel.sh ' + ' '.join(sys.argv[3:5]) + f' {int(seconds)} (perf cpu-clock samples; ns per request, perf overhead included)')
print()
print('| proxy | req/s | kernel ns/req | user ns/req | total |')
print('|---|---|---|---|---|')
for p, (rps, f) in runs.items():
    k = sum(v for (space, _), v in f.items() if space == 'kernel')
    u = sum(v for (space, _), v in f.items() if space == 'user')
    print(f'| {p} | {rps:.0f} | {k:.0f} | {u:.0f} | {k + u:.0f} |')
n, b = runs['nginx'][1], runs['banyan'][1]
diff = sorted(((b.get(key, 0) - n.get(key, 0), key[1]) for key in set(n) | set(b) if key[0] == 'kernel'), reverse=True)
print()
print('Kernel functions, banyan minus nginx (ns per request): most more')
print()
for v, name in diff[:10]:
    print(f'- {v:+.0f} {name}')
print()
print('and most less')
print()
for v, name in diff[-10:]:
    print(f'- {v:+.0f} {name}')
for p in ('banyan', 'nginx'):
    print()
    print(f'{p}: user-space functions above 40 ns per request')
    print()
    for v, name in sorted(((v, key[1]) for key, v in runs[p][1].items() if key[0] == 'user'), reverse=True):
        if v < 40:
            break
        print(f'- {v:.0f} {name}')
EOF
