#!/usr/bin/env bash
# The performance table of the README: veer beside NGINX and HAProxy (and the client straight at
# the upstream), HTTP/1.1 keep-alive with wrk and h2c with h2load, through the shared harness
# (../shared/bench). Runs it RUNS times, each a separate interleaved run of ROUNDS rounds, and
# keeps each report; then prints the README's tables (benches/ratios.py): one row per run, with
# veer's ratios to each peer. Compare ratios within one run only (the machine drifts between runs).
#
#   benches/compare.sh [RUNS] [ROUNDS] [SECONDS]      (default 3 5 8)
#
# Needs a release build (cargo build --release) and the harness's tools:
# apt-get install -y nginx-light haproxy wrk nghttp2-client. VEER_BIN and HARNESS override the
# paths; reports go to OUT (default /tmp/veer-compare).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
harness=${HARNESS:-$root/../shared/bench/run.sh}
veer=${VEER_BIN:-$root/target/release/veer}
runs=${1:-3}
rounds=${2:-5}
seconds=${3:-8}
out=${OUT:-/tmp/veer-compare}
[ -x "$veer" ] || { echo "no veer binary at $veer (cargo build --release)" >&2; exit 2; }
[ -x "$harness" ] || { echo "no harness at $harness" >&2; exit 2; }
mkdir -p "$out"
for i in $(seq "$runs"); do
    echo "run $i of $runs (nproc $(nproc), $(date -u +%FT%TZ))" >&2
    "$harness" --veer "$veer" -c direct,nginx,haproxy,veer -d "$seconds" -r "$rounds" \
        -o "$out/run.$i.md" >/dev/null
done
echo "reports in $out: $(ls "$out"/run.*.md | tr '\n' ' ')" >&2
# The README's tables, one row per run, with veer's ratios to each peer.
python3 "$here/ratios.py" $(seq -f "$out/run.%g.md" "$runs")
