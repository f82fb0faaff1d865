#!/usr/bin/env bash
# What shadow mirroring costs the primary: the shared harness's veer run (../shared/bench) without
# mirroring and with every request mirrored to a shadow that answers after 2 s, alternated round
# by round so that both see the same machine. The shadow runs on the load core (CPU 1), never on
# the proxy's.
#
#   benches/mirror/run.sh [ROUNDS]         # default 3; VEER_BIN, HARNESS override the paths
#
# Reports go to /tmp/veer-mirror-bench/{off,on}.N.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
harness=${HARNESS:-$root/../shared/bench/run.sh}
veer=${VEER_BIN:-$root/target/release/veer}
rounds=${1:-3}
out=/tmp/veer-mirror-bench
mkdir -p "$out"
taskset -c 1 python3 "$here/slow_shadow.py" 18099 2 &
shadow=$!
trap 'kill "$shadow"' EXIT
for _ in $(seq 100); do  # until the shadow listens (10 s at most)
  (exec 3<>/dev/tcp/127.0.0.1/18099) 2>/dev/null && break
  sleep 0.1
done
for i in $(seq "$rounds"); do
  "$harness" --veer "$veer" -c veer -d 5 -r 1 --no-h2 -o "$out/off.$i.md" >/dev/null
  "$harness" --veer "$veer" --veer-config "$here/veer-mirror.toml" -c veer -d 5 -r 1 --no-h2 \
    -o "$out/on.$i.md" >/dev/null
done
echo "reports in $out"
