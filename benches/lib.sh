# Shared by the benchmark scripts (sourced): a scratch folder and every process started
# from the script stopped on exit, tool checks, and the nginx configuration they share.
# Expects ROOT and NAME set by the caller.

WORK=$(mktemp -d "/tmp/banyan-$NAME.XXXXXX")
mkdir -p "$ROOT/benches/results"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  sleep 0.3
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

need() { # tools...
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "$NAME.sh needs $tool"; exit 1; }
  done
}

nginx_head() { # folder: one worker, no access log, in the foreground
  cat <<NGINX
worker_processes 1;
daemon off;
user root;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
NGINX
}

wait_http() { # url: until it answers, at most 10 s
  for _ in $(seq 1 100); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "nothing answers at $1" >&2; exit 1
}
