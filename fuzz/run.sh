#!/usr/bin/env bash
# Runs banyan's fuzz targets on the stable toolchain (cargo-fuzz with libFuzzer, no
# sanitizer: the code under test is safe Rust, and panics are what the targets catch).
#   fuzz/run.sh <target>|all [seconds]     each target for that long (default 30 s)
#   RUNS=10000000 fuzz/run.sh all 3600     or until it has run RUNS inputs, if sooner
# Seeds are read from fuzz/seeds/<target>; what libFuzzer finds goes to fuzz/corpus/
# (ignored by git). Crashes land in fuzz/artifacts/<target>/ and fail the run; every
# input under fuzz/regressions/<target>/ is replayed first.
set -euo pipefail
cd "$(dirname "$0")"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --version 0.13.2
targets=(request_head differential chunked follow answers response_head route_file overrides json_compare ramps grpc_answer)
[ "${1:-all}" = all ] || targets=("$1")
seconds=${2:-30}
if [ ${#targets[@]} -eq 1 ]; then cargo fuzz build -s none "${targets[0]}"; else cargo fuzz build -s none; fi
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "seeds/$t"
  if [ -d "regressions/$t" ]; then
    for input in regressions/"$t"/*; do
      cargo fuzz run -s none "$t" "$input" >/dev/null 2>&1 || {
        echo "fuzz: $t fails again on $input"
        exit 1
      }
    done
  fi
  out=$(cargo fuzz run -s none "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$seconds" ${RUNS:+-runs=$RUNS} -print_final_stats=1 -close_fd_mask=3 2>&1) || {
    echo "$out" | tail -n 40
    echo "fuzz: $t failed"
    exit 1
  }
  runs=$(echo "$out" | sed -n 's/^stat::number_of_executed_units: *//p')
  took=$(echo "$out" | sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p')
  echo "fuzz: $t: $runs executions in ${took:-$seconds} s, no crash"
done
