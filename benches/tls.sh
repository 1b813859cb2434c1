#!/usr/bin/env bash
# TLS benchmark: h2load over HTTPS (HTTP/2 with -m streams per connection, and HTTP/1.1
# with one request at a time per connection, for reference) through banyan and
# through nginx, one after the other in each round, to the same plain-HTTP upstream.
#
#   benches/tls.sh [requests per run, default 200000] [connections, default 32] [streams per connection, default 10] [rounds, default 3]
#
# Layout on a 2-core machine: the proxy under test alone on core 0, the upstream (nginx,
# 1 worker) and h2load on core 1. Proxy CPU per request = (utime + stime of the proxy's
# processes during the run) / requests completed. Certificates are made with openssl for
# the run. Needs nginx, h2load (nghttp2-client), openssl, curl, taskset, and a release
# build (the script builds one). Everything listens on 127.0.0.1 only and is stopped on
# exit. Results go to stdout and benches/results/tls-<time>.md.
set -euo pipefail

REQUESTS=${1:-200000}
CONNS=${2:-32}
STREAMS=${3:-10}
ROUNDS=${4:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NAME=tls
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"
need nginx h2load openssl taskset curl

UP=18681 BANYAN_PLAIN=18680 BANYAN_TLS=18683 BANYAN_ADMIN=18690 NGINX=18780

echo "building banyan (release)..." >&2
(cd "$ROOT" && cargo build --release --quiet)
BIN="$ROOT/target/release/banyan"

# ---- certificates: a CA and a certificate for localhost / 127.0.0.1 ------------------
mkdir -p "$WORK/pki" "$WORK/up" "$WORK/px" "$WORK/banyan/config" "$WORK/banyan/routes"
(
  cd "$WORK/pki"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -subj "/CN=bench CA" -days 2 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
  printf "subjectAltName=DNS:localhost,IP:127.0.0.1\n" > san.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile san.ext 2>/dev/null
)

json_upstreams "$WORK/up" "$UP" '{"served_by":"monolith","ok":true}'

{ nginx_head "$WORK/px"; cat <<EOF
  upstream monolith { server 127.0.0.1:$UP; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX ssl http2;
    ssl_certificate $WORK/pki/server.pem;
    ssl_certificate_key $WORK/pki/server.key;
    http2_max_concurrent_streams 128;
    location / {
      proxy_pass http://monolith;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
    }
  }
}
EOF
} > "$WORK/px/nginx.conf"
taskset -c 0 nginx -p "$WORK/px" -c "$WORK/px/nginx.conf" & PIDS+=($!)
NGINX_MASTER=$!

banyan_config "$WORK/banyan" "$BANYAN_PLAIN" "$BANYAN_ADMIN" "$UP" "$UP"
sed -i "s|^\[admin\]|[server.tls]\nlisten = \"127.0.0.1:$BANYAN_TLS\"\ncert = \"$WORK/pki/server.pem\"\nkey = \"$WORK/pki/server.key\"\n\n[admin]|" "$WORK/banyan/config/banyan.toml"
(cd "$WORK/banyan" && exec taskset -c 0 "$BIN" run > /dev/null) & PIDS+=($!)
BANYAN_PID=$!

wait_https() { # url
  for _ in $(seq 1 100); do curl -sf --cacert "$WORK/pki/ca.pem" -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "nothing answers at $1" >&2; exit 1
}
wait_http "http://127.0.0.1:$UP/"
wait_https "https://127.0.0.1:$NGINX/"
wait_https "https://127.0.0.1:$BANYAN_TLS/"

# One h2load run: appends "req/s cpu_us_per_req" to $WORK/<name>.rounds.
h2run() { # name port pid [h2load args]
  local name=$1 port=$2 pid=$3 before after out done_reqs
  shift 3
  taskset -c 1 h2load -n 20000 -c "$CONNS" -m "$STREAMS" "$@" "https://127.0.0.1:$port/api/x" >/dev/null
  before=$(cpu_ticks "$pid")
  out=$(taskset -c 1 h2load -n "$REQUESTS" -c "$CONNS" -m "$STREAMS" "$@" "https://127.0.0.1:$port/api/x")
  after=$(cpu_ticks "$pid")
  done_reqs=$(echo "$out" | awk '/^requests:/ {print $8}')
  if [ "$(echo "$out" | awk '/^status codes:/ {print $3}')" != "$done_reqs" ]; then
    echo "$name: not every answer was a 2xx: $(echo "$out" | grep '^status codes')" >&2
  fi
  {
    echo "$out" | awk '/^finished in/ {gsub(",", ""); printf "%.0f ", $4}'
    awk -v t=$((after - before)) -v hz="$TICKS" -v n="$done_reqs" 'BEGIN { printf "%.1f\n", t / hz * 1e6 / n }'
  } >> "$WORK/$name.rounds"
}

for r in $(seq 1 "$ROUNDS"); do
  echo "round $r of $ROUNDS..." >&2
  h2run "nginx-h2" "$NGINX" "$NGINX_MASTER"
  h2run "banyan-h2" "$BANYAN_TLS" "$BANYAN_PID"
  h2run "nginx-http1.1" "$NGINX" "$NGINX_MASTER" --h1 -m 1
  h2run "banyan-http1.1" "$BANYAN_TLS" "$BANYAN_PID" --h1 -m 1
done

{
  echo "Load: h2load -n $REQUESTS -c $CONNS -m $STREAMS over TLS (TLS 1.3, ECDSA P-256), GET /api/x proxied to one plain-HTTP upstream; $ROUNDS rounds, medians"
  echo "Machine: $(nproc) cores, $(awk '/model name/ {sub(/.*: /, ""); print; exit}' /proc/cpuinfo); proxy pinned to core 0, upstream nginx + h2load on core 1"
  echo "Date: $(date -u +%Y-%m-%dT%H:%MZ), banyan $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $(nginx -v 2>&1)"
  echo
  echo "| proxy | req/s | proxy CPU µs/req | CPU per round |"
  echo "|---|---|---|---|"
  for p in "nginx-h2" "banyan-h2" "nginx-http1.1" "banyan-http1.1"; do
    f="$WORK/$p.rounds"
    printf "| %s | %s | %s | %s |\n" "$p" "$(median "$f" 1)" "$(median "$f" 2)" "$(awk '{printf "%s%s", (NR>1 ? ", " : ""), $2}' "$f")"
  done
} | tee "$ROOT/benches/results/tls-$(date -u +%Y%m%dT%H%M%S).md"
