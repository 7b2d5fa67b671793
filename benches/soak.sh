#!/usr/bin/env bash
# Soak: a steady load of shell tasks with output against a release server whose retention is
# short, sampling the data dir's size, to show it reaches a plateau: retention removes as much
# as arrives, and the server compacts the database when it is mostly garbage (sled does not
# reclaim the space of deleted records under this churn). Its compactions are listed at the end.
#
# Usage: benches/soak.sh [SECONDS] [RETENTION_SECONDS]   (defaults 300 and 30)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-300}
retention=${2:-30}
agents=4
cargo build --release --quiet
bin=$PWD/target/release/orange
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT

"$bin" server --data "$work/db" --listen 127.0.0.1:0 --retention "$retention" \
  >"$work/server.out" 2>"$work/server.log" &
for _ in $(seq 100); do grep -q listening "$work/server.out" && break; sleep 0.05; done
url=$(sed -n 's/.*listening on //p' "$work/server.out")
export ORANGE_SERVER=$url ORANGE_TOKEN=$(cat "$work/db/admin.token") ORANGE_LOG=warn
export ORANGE_ENROLL_KEY=$("$bin" enroll-key --data "$work/db")
ids=""
for i in $(seq "$agents"); do
  "$bin" agent --appid "soak-$i" --state "$work/agent-$i" --allow-shell 2>>"$work/agents.log" &
  ids="${ids:+$ids,}soak-$i"
done
sleep 2

sent=0
start=$(date +%s)
next_sample=$start
echo "elapsed_s  tasks_sent  data_dir_kib"
while [ $(( $(date +%s) - start )) -lt "$secs" ]; do
  "$bin" task send --appid "$ids" --type shell --payload 'head -c 3000 /dev/zero | tr "\0" x' >/dev/null
  sent=$((sent + agents))
  now=$(date +%s)
  if [ "$now" -ge "$next_sample" ]; then
    printf '%9d  %10d  %12d\n' $((now - start)) "$sent" "$(du -sk "$work/db" | cut -f1)"
    next_sample=$((now + 20))
  fi
done
printf '%9d  %10d  %12d\n' "$secs" "$sent" "$(du -sk "$work/db" | cut -f1)"
echo "compactions (from the server's log):"
grep "database compacted" "$work/server.log" | sed 's/\x1b\[[0-9;]*m//g' || echo "none"
