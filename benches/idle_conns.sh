#!/usr/bin/env bash
# Idle keep-alive connections, banyan beside nginx: each proxy's RSS after start, while
# holding N idle keep-alive client connections (each has had one request answered,
# benches/idle_conns.py), and again after they all closed. Reported per rung: RSS, the
# cost per idle connection over the idle figure, and RSS after close.
#
#   benches/idle_conns.sh [connections...]      (default: 1000 10000 50000)
#
# Both proxies run one data-path thread / worker, keep-alive 600 s, room for every
# connection (banyan's server.max_connections, nginx's worker_connections), and keep-alive
# connections to the upstream (nginx, one worker). The holder rotates its source over
# 127.0.0.1-8 so 50,000 connections to one port fit the ephemeral range. Everything
# listens on 127.0.0.1 and is stopped on exit; results go to benches/results/.
set -euo pipefail

LADDER=${*:-1000 10000 50000}
BANYAN_ENV=${BANYAN_ENV:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NAME=idle_conns
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"
need nginx python3 curl
ulimit -n "$(ulimit -Hn)"
MAX=0
for n in $LADDER; do [ "$n" -gt "$MAX" ] && MAX=$n; done

UP=18981 BANYAN=18980 BANYAN_ADMIN=18990 NGINX=18982
echo "building banyan (release)..." >&2
(cd "$ROOT" && cargo build --release --quiet)
BIN="$ROOT/target/release/banyan"

DOC='{"id":42,"status":"shipped","total":12.5}'
mkdir -p "$WORK/up" "$WORK/px" "$WORK/banyan/config" "$WORK/banyan/routes"
json_upstreams "$WORK/up" "$UP" "$DOC"
{ nginx_head "$WORK/px" | sed "s/worker_connections 4096/worker_connections $((MAX + 1000))/"; cat <<EOF
  keepalive_timeout 600s;
  upstream monolith { server 127.0.0.1:$UP; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX backlog=16384;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    location / { proxy_pass http://monolith; }
  }
}
EOF
} > "$WORK/px/nginx.conf"
banyan_config "$WORK/banyan" "$BANYAN" "$BANYAN_ADMIN" "$UP" "$UP"
sed -i "/^default_upstream/a keepalive_timeout = \"600s\"\nmax_connections = $((MAX + 1000))" "$WORK/banyan/config/banyan.toml"
wait_http "http://127.0.0.1:$UP/"

settle() { # pid: RSS (KiB) once it stops moving (two equal readings 1 s apart, at most 20 s)
  local last=-1 v
  for _ in $(seq 1 20); do
    v=$(rss_kib "$1")
    [ "$v" = "$last" ] && break
    last=$v
    sleep 1
  done
  echo "$v"
}

measure() { # name port pid
  local name=$1 port=$2 pid=$3 idle held after n line
  idle=$(settle "$pid")
  for n in $LADDER; do
    coproc HOLD { exec python3 "$ROOT/benches/idle_conns.py" "$port" "$n"; }
    read -r line <&"${HOLD[0]}"
    held=$(settle "$pid")
    echo >&"${HOLD[1]}"
    read -r _ <&"${HOLD[0]}" || true
    wait "$HOLD_PID" 2>/dev/null || true
    sleep 5  # what is freed is given back after a delay, not at once
    after=$(settle "$pid")
    printf '| %s | %s | %s | %.1f MiB | %.1f MiB | %.2f KiB | %.1f MiB |\n' "$name" "$n" "$line" \
      "$(echo "$idle / 1024" | bc -l)" "$(echo "$held / 1024" | bc -l)" \
      "$(echo "($held - $idle) / $n" | bc -l)" "$(echo "$after / 1024" | bc -l)"
  done
}

# Written to a file rather than piped: a process started inside a pipeline runs in a
# subshell, whose PIDS the exit trap would not see.
OUT="$ROOT/benches/results/idle_conns-$(date -u +%Y%m%dT%H%M).md"
{
  echo "# Idle keep-alive connections, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "Command: benches/idle_conns.sh $LADDER ($(git -C "$ROOT" rev-parse --short HEAD), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), open files $(ulimit -n))"
  echo
  echo "| proxy | connections | holder | RSS idle | RSS holding them | per connection | RSS after close |"
  echo "|---|---|---|---|---|---|---|"
} > "$OUT"
(cd "$WORK/banyan" && exec env $BANYAN_ENV "$BIN" run > "$WORK/banyan.log" 2>&1) & PIDS+=($!)
BANYAN_PID=$!
wait_http "http://127.0.0.1:$BANYAN/pass"
measure banyan "$BANYAN" "$BANYAN_PID" >> "$OUT"
kill -INT "$BANYAN_PID"
nginx -p "$WORK/px" -c "$WORK/px/nginx.conf" & PIDS+=($!)
NGINX_PID=$!
wait_http "http://127.0.0.1:$NGINX/pass"
measure nginx "$NGINX" "$NGINX_PID" >> "$OUT"
cat "$OUT"
