#!/usr/bin/env bash
# Round trip of `orange task run -- true` against one idle connected agent on loopback:
# release build, N runs (default 100), prints median, p99 and max in milliseconds.
#
# Usage: benches/task_run_roundtrip.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-100}
cargo build --release --quiet
bin=$PWD/target/release/orange
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT

"$bin" server --data "$work/db" --listen 127.0.0.1:0 >"$work/server.out" 2>"$work/server.log" &
for _ in $(seq 100); do grep -q listening "$work/server.out" && break; sleep 0.05; done
url=$(sed -n 's/.*listening on //p' "$work/server.out")
export ORANGE_SERVER=$url ORANGE_TOKEN=$(cat "$work/db/admin.token") ORANGE_LOG=warn
export ORANGE_ENROLL_KEY=$("$bin" enroll-key --data "$work/db")
"$bin" agent --appid bench --state "$work/agent" --allow-shell 2>"$work/agent.log" &
for _ in $(seq 100); do "$bin" agents --online --json | grep -q '"bench"' && break; sleep 0.05; done
"$bin" task run --appid bench -- true # warm-up

for _ in $(seq "$runs"); do
  start=$(date +%s%N)
  "$bin" task run --appid bench -- true
  end=$(date +%s%N)
  echo $(( (end - start) / 1000 ))
done | sort -n >"$work/us"

pick() { sed -n "$1p" "$work/us"; }
n=$(wc -l <"$work/us")
p50=$(pick $(( (n + 1) / 2 )))
p99=$(pick $(( (n * 99 + 99) / 100 )))
max=$(pick "$n")
printf 'orange task run -- true, %d runs: p50 %d.%03d ms, p99 %d.%03d ms, max %d.%03d ms\n' \
  "$n" $((p50 / 1000)) $((p50 % 1000)) $((p99 / 1000)) $((p99 % 1000)) $((max / 1000)) $((max % 1000))
