#!/usr/bin/env bash
# gRPC benchmark: unary calls (the tests' Greeter service, tonic over h2c) direct to the
# peer, through banyan (a route to an h2c upstream, and a 20 % sticky split between two
# peers) and through nginx's `grpc_pass`, in alternating rounds. h2load sends the calls
# (a POST of one gRPC frame with `content-type: application/grpc`), its per-request log
# gives the p99.
#
#   benches/grpc.sh [calls per run, default 100000] [connections, default 8] [streams per connection, default 10] [rounds, default 3]
#
# Layout on a 2-core machine: the proxy under test alone on core 0; the peers and h2load
# on core 1. Proxy CPU per call = (utime + stime of the proxy's processes during the run)
# / calls completed. Needs nginx, h2load (nghttp2-client), curl, taskset, and release
# builds (the script builds them). Everything listens on 127.0.0.1 only and is stopped on
# exit. Results go to stdout and benches/results/grpc-<time>.md.
set -euo pipefail

CALLS=${1:-100000}
CONNS=${2:-8}
STREAMS=${3:-10}
ROUNDS=${4:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NAME=grpc
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"
need nginx h2load curl taskset

PEER_A=18881 PEER_B=18882 BANYAN=18880 BANYAN_ADMIN=18890 NGINX=18980

echo "building banyan and the gRPC peer (release)..." >&2
(cd "$ROOT" && cargo build --release --quiet && cargo build --release --quiet --example grpc_peer)
BIN="$ROOT/target/release/banyan"
PEER="$ROOT/target/release/examples/grpc_peer"

taskset -c 1 "$PEER" "127.0.0.1:$PEER_A" monolith & PIDS+=($!)
taskset -c 1 "$PEER" "127.0.0.1:$PEER_B" orders & PIDS+=($!)

mkdir -p "$WORK/px" "$WORK/banyan/config" "$WORK/banyan/routes"
{ nginx_head "$WORK/px"; cat <<CONF
  upstream greeter { server 127.0.0.1:$PEER_A; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX http2;
    http2_max_concurrent_streams 128;
    location / { grpc_pass grpc://greeter; }
  }
}
CONF
} > "$WORK/px/nginx.conf"
taskset -c 0 nginx -p "$WORK/px" -c "$WORK/px/nginx.conf" & PIDS+=($!)
NGINX_MASTER=$!

cat > "$WORK/banyan/config/banyan.toml" <<CONF
[server]
listen = ["127.0.0.1:$BANYAN"]
threads = 1
default_upstream = "monolith"
[admin]
listen = "127.0.0.1:$BANYAN_ADMIN"
[upstreams.monolith]
peers = ["127.0.0.1:$PEER_A"]
protocol = "h2c"
[upstreams.orders]
peers = ["127.0.0.1:$PEER_B"]
protocol = "h2c"
CONF
cat > "$WORK/banyan/routes/greeter.toml" <<'CONF'
[[route]]
name = "pass"
match.path = "/test.Greeter/SayHello"
match.headers = { x-scenario = "pass" }
legacy = "monolith"

[[route]]
name = "split"
match.path = "/test.Greeter/SayHello"
match.headers = { x-scenario = "split" }
legacy = "monolith"
target = "orders"
percent = 20
sticky = "header:x-user-id"
CONF
(cd "$WORK/banyan" && exec taskset -c 0 "$BIN" run > /dev/null 2>&1) & PIDS+=($!)
BANYAN_PID=$!
wait_http "http://127.0.0.1:$BANYAN_ADMIN/healthz"

# One call: Hello { name: "bench" }, as one uncompressed gRPC frame.
printf '\x00\x00\x00\x00\x07\x0a\x05bench' > "$WORK/hello.bin"
call() { # port [headers]: the call's grpc-status, read with curl
  local port=$1
  shift
  curl -sS --http2-prior-knowledge -o /dev/null -D - -H 'content-type: application/grpc' \
    -H 'te: trailers' "$@" --data-binary @"$WORK/hello.bin" \
    "http://127.0.0.1:$port/test.Greeter/SayHello" | tr -d '\r' | awk -F': ' 'tolower($1)=="grpc-status" {print $2}'
}
for _ in $(seq 1 100); do [ "$(call "$PEER_A" 2>/dev/null)" = 0 ] && break; sleep 0.1; done
# A unary OK answer carries its status in the trailers, which curl -D does not print;
# the HTTP status and the answer's frame are checked by h2load's 2xx count instead.

# One run: appends "calls/s p99_ms cpu_us_per_call" to $WORK/<name>.rounds.
h2run() { # name port pid|- [h2load args]
  local name=$1 port=$2 pid=$3 before=0 after=0 out done_calls
  shift 3
  local args=(-c "$CONNS" -m "$STREAMS" -d "$WORK/hello.bin" -H 'content-type: application/grpc' -H 'te: trailers' "$@")
  taskset -c 1 h2load -n 10000 "${args[@]}" "http://127.0.0.1:$port/test.Greeter/SayHello" >/dev/null
  [ "$pid" = - ] || before=$(cpu_ticks "$pid")
  out=$(taskset -c 1 h2load -n "$CALLS" "${args[@]}" --log-file="$WORK/$name.log" "http://127.0.0.1:$port/test.Greeter/SayHello")
  [ "$pid" = - ] || after=$(cpu_ticks "$pid")
  done_calls=$(echo "$out" | awk '/^requests:/ {print $8}')
  if [ "$(echo "$out" | awk '/^status codes:/ {print $3}')" != "$done_calls" ]; then
    echo "$name: not every answer was a 2xx: $(echo "$out" | grep '^status codes')" >&2
  fi
  {
    echo "$out" | awk '/^finished in/ {gsub(",", ""); printf "%.0f ", $4}'
    # The log's third column: each call's time in µs.
    awk '{print $3}' "$WORK/$name.log" | sort -n | awk '{v[NR]=$1} END {i=int(NR*0.99); if (i<1) i=1; printf "%.2f ", v[i]/1000}'
    awk -v t=$((after - before)) -v hz="$TICKS" -v n="$done_calls" 'BEGIN { printf "%.1f\n", t / hz * 1e6 / n }'
  } >> "$WORK/$name.rounds"
  rm -f "$WORK/$name.log"
}

for r in $(seq 1 "$ROUNDS"); do
  echo "round $r of $ROUNDS..." >&2
  h2run "direct" "$PEER_A" -
  h2run "nginx grpc_pass" "$NGINX" "$NGINX_MASTER"
  h2run "banyan pass-through" "$BANYAN" "$BANYAN_PID" -H 'x-scenario: pass' -H 'x-user-id: u1'
  h2run "banyan 20 % split" "$BANYAN" "$BANYAN_PID" -H 'x-scenario: split' -H 'x-user-id: u42'
done

{
  echo "Load: h2load -n $CALLS -c $CONNS -m $STREAMS, unary gRPC (one 12-byte frame) over h2c to tonic peers; $ROUNDS rounds, medians"
  echo "Machine: $(nproc) cores, $(awk '/model name/ {sub(/.*: /, ""); print; exit}' /proc/cpuinfo); proxy pinned to core 0, peers + h2load on core 1"
  echo "Date: $(date -u +%Y-%m-%dT%H:%MZ), banyan $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $(nginx -v 2>&1)"
  echo
  echo "| path | calls/s | p99 ms | proxy CPU µs/call | CPU per round |"
  echo "|---|---|---|---|---|"
  for p in "direct" "nginx grpc_pass" "banyan pass-through" "banyan 20 % split"; do
    f="$WORK/$p.rounds"
    printf "| %s | %s | %s | %s | %s |\n" "$p" "$(median "$f" 1)" "$(median "$f" 2)" "$(median "$f" 3)" "$(awk '{printf "%s%s", (NR>1 ? ", " : ""), $3}' "$f")"
  done
} | tee "$ROOT/benches/results/grpc-$(date -u +%Y%m%dT%H%M%S).md"
