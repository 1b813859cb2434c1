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

nginx_split_proxy() { # port monolith_port orders_port: nginx as the proxy, with the forwarding headers banyan sends and S2's 20 % split; its server block is left open for more locations
  cat <<NGINX
  upstream monolith { server 127.0.0.1:$2;   keepalive 64; }
  upstream orders   { server 127.0.0.1:$3; keepalive 64; }
  split_clients "\${http_x_user_id}" \$backend { 20% orders; * monolith; }
  server {
    listen 127.0.0.1:$1;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host \$host;
    proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto \$scheme;
    proxy_set_header X-Forwarded-Host \$host;
    location / { proxy_pass http://monolith; }
    location /api/orders { proxy_pass http://\$backend; }
NGINX
}

wait_http() { # url: until it answers, at most 10 s
  for _ in $(seq 1 100); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "nothing answers at $1" >&2; exit 1
}

tree_sum() { # pid file awk-program: a /proc/<pid>/file figure summed over the process and its children (nginx workers)
  local total=0 p
  for p in "$1" $(pgrep -P "$1" 2>/dev/null || true); do
    [ -r "/proc/$p/$2" ] || continue
    total=$((total + $(awk "$3" "/proc/$p/$2")))
  done
  echo "$total"
}
cpu_ticks() { tree_sum "$1" stat '{print $14 + $15}'; }  # utime+stime, in clock ticks
user_ticks() { tree_sum "$1" stat '{print $14}'; }       # utime alone
rss_kib() { tree_sum "$1" status '/^VmRSS/ {print $2}'; } # resident set, KiB

json_upstreams() { # folder port body [port body]...: one nginx on core 1 answering each body as JSON
  # (UP_SCHED, when set, is a command it runs under, chrt say)
  local folder=$1
  shift
  { nginx_head "$folder"
    while [ $# -ge 2 ]; do
      printf "  server { listen 127.0.0.1:%s; location / { default_type application/json; return 200 '%s'; } }\n" "$1" "$2"
      shift 2
    done
    echo "}"
  } > "$folder/nginx.conf"
  ${UP_SCHED:-} taskset -c 1 nginx -p "$folder" -c "$folder/nginx.conf" & PIDS+=($!)
}
TICKS=$(getconf CLK_TCK)
# Time the hypervisor ran something else while this VM wanted its CPUs, all cores, in
# clock ticks. On a shared host it governs the tail: a few ms of it in a run and that
# run's p99 is the length of the pause, whatever the proxy does.
steal_ticks() { awk '/^cpu / {print $9}' /proc/stat; }

# One round: wrk on core 1 against url, the proxy's CPU (pid and its children) and the
# host's steal measured around it. Appends "rps p50 p99 cpu_us_per_req steal_ms
# user_us_per_req" to $WORK/<name>.rounds (the last: the user-space share of the CPU).
# Needs DURATION and CONNS (WARMUP, default 2 s, the unmeasured run before); extra
# arguments go to wrk (a script, say). WRK_CPUS (default 1) and WRK_THREADS (default 1)
# place wrk elsewhere. With COUNT set,
# also appends to $WORK/<name>.counted how much COUNT's number grew per request.
run() { # name url pid [wrk args...]
  local name=$1 url=$2 pid=$3 before after out reqs
  shift 3
  # Warm the proxy's connection pools first.
  local wrk=(taskset -c "${WRK_CPUS:-1}" wrk -t"${WRK_THREADS:-1}" -c"$CONNS")
  "${wrk[@]}" -d"${WARMUP:-2}s" "$@" "$url" >/dev/null
  local counted=${COUNT:+$($COUNT)}
  before=$(cpu_ticks "$pid")
  local user_before user_after
  user_before=$(user_ticks "$pid")
  local stolen
  stolen=$(steal_ticks)
  out=$("${wrk[@]}" -d"${DURATION}s" --latency "$@" "$url")
  after=$(cpu_ticks "$pid")
  user_after=$(user_ticks "$pid")
  stolen=$(($(steal_ticks) - stolen))
  # COUNT names a command printing a counter; its growth per request is kept beside.
  if [ -n "${COUNT:-}" ]; then
    awk -v a="$counted" -v b="$($COUNT)" -v n="$(echo "$out" | awk '/requests in/ {print $1}')" \
      'BEGIN { printf "%.3f\n", (b - a) / n }' >> "$WORK/$name.counted"
  fi
  if echo "$out" | grep -q "Non-2xx"; then echo "$name: $(echo "$out" | grep Non-2xx)" >&2; fi
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  {
    echo "$out" | awk '/Requests\/sec/ {printf "%.0f ", $2}'
    echo "$out" | awk '$1=="50%" || $1=="99%" {v=$2; if (v ~ /us$/) v=v/1000; else if (v ~ /ms$/) v=v+0; else if (v ~ /s$/) v=v*1000; printf "%.3f ", v}'
    awk -v t=$((after - before)) -v u=$((user_after - user_before)) -v hz="$TICKS" -v n="$reqs" -v st="$stolen" \
      'BEGIN { printf "%.1f %d %.2f\n", t / hz * 1e6 / n, st / hz * 1000, u / hz * 1e6 / n }'
  } >> "$WORK/$name.rounds"
}

# Shadows banyan compared so far on the route named "mirrored" (every outcome but
# `dropped`, which a saturated proxy sheds rather than slow its clients); needs
# BANYAN_ADMIN. As run's COUNT: copies compared per client request.
shadows_completed() {
  curl -s "http://127.0.0.1:$BANYAN_ADMIN/metrics" | awk '/^banyan_shadow_requests_total\{.*route="mirrored"/ && !/outcome="dropped"/ {n += $NF} END {print n + 0}'
}

median() { # file column
  awk -v c="$2" '{print $c}' "$1" | sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'
}

banyan_config() { # folder proxy_port admin_port monolith_port orders_port: one data-path thread
  cat > "$1/config/banyan.toml" <<CONF
[server]
listen = ["127.0.0.1:$2"]
threads = 1
default_upstream = "monolith"
[admin]
listen = "127.0.0.1:$3"
[upstreams.monolith]
peers = ["127.0.0.1:$4"]
[upstreams.orders]
peers = ["127.0.0.1:$5"]
CONF
}

users_script() { # file: a wrk script sending /api/orders/42 as one of 100,000 users per request (X-User-Id), so the split sees many distinct keys
  cat > "$1" <<'LUA'
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "/api/orders/42", { ["X-User-Id"] = "user-" .. (counter * 7919 % 100000) })
end
LUA
}

mirrored_route() { # the load benchmark's S3 route, on stdout: /mirrored to legacy, a 100 % shadow with comparison
  cat <<ROUTE
[[route]]
name = "mirrored"
match.path_prefix = "/mirrored"
legacy = "monolith"
target = "orders"
percent = 0
[route.shadow]
percent = 100
compare = true
ROUTE
}

orders_route() { # file: the load benchmark's S2 route, a 20 % sticky split of /api/orders
  cat > "$1" <<ROUTE
[[route]]
name = "orders"
match.path_prefix = "/api/orders"
legacy = "monolith"
target = "orders"
percent = 20
sticky = "header:x-user-id"
ROUTE
}

ratio_ci() { # rounds-file rounds-file column: the per-round ratios, first over second, their geometric mean and its 95 % interval
  paste "$1" "$2" | awk -v c="$3" -v w="$(awk 'END {print NF}' "$1")" '
    { r = $c / $(c + w); l = log(r); s += l; ss += l * l; n++; each = each (n > 1 ? ", " : "") sprintf("%.2f", r) }
    END {
      if (n < 2) { printf "%.2f× (one round, no interval)", exp(s); exit }
      # Rounding can leave identical ratios a variance just below zero.
      m = s / n; v = (ss - n * m * m) / (n - 1); se = sqrt(v > 0 ? v : 0) / sqrt(n)
      # Student t, 97.5 %, for n-1 degrees of freedom (rounded down to the table: wider).
      split("12.71 4.30 3.18 2.78 2.57 2.45 2.36 2.31 2.26 2.23", t, " ")
      q = (n - 1 <= 10) ? t[n - 1] : (n - 1 < 20) ? 2.13 : (n - 1 < 30) ? 2.09 : (n - 1 < 60) ? 2.04 : 2.00
      printf "%.2f× (95 %% interval %.2f–%.2f, %d rounds: %s)", exp(m), exp(m - q * se), exp(m + q * se), n, each
    }'
}

table_head() { # the header of the tables `row` fills
  echo "| proxy | req/s | p50 | p99 | proxy CPU µs/req | CPU per round | host steal ms per round |"
  echo "|---|---|---|---|---|---|---|"
}

row() { # name: a markdown row of medians, and each round's CPU and steal
  local f="$WORK/$1.rounds"
  printf "| %s | %s | %s ms | %s ms | %s | %s | %s |\n" "$1" "$(median "$f" 1)" "$(median "$f" 2)" "$(median "$f" 3)" "$(median "$f" 4)" \
    "$(awk '{printf "%s%s", (NR>1 ? ", " : ""), $4}' "$f")" "$(awk '{printf "%s%s", (NR>1 ? ", " : ""), $5}' "$f")"
}

steal_free() { # max_ms out_dir rounds-file...: copies of the files keeping only the rounds in which no run lost more than max_ms to the host; prints how many were kept
  mkdir -p "$2"
  local max=$1 out=$2 f
  shift 2
  # Line n of every file is round n; a round is kept or dropped whole, so pairs stay pairs.
  paste -d'|' "$@" | awk -F'|' -v max="$max" '{ for (i = 1; i <= NF; i++) { split($i, c, " "); if (c[5] > max) next } print }' > "$out/kept"
  local i=1
  for f in "$@"; do
    cut -d'|' -f"$i" "$out/kept" > "$out/$(basename "$f")"
    i=$((i + 1))
  done
  wc -l < "$out/kept"
}
