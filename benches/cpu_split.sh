#!/usr/bin/env bash
# Where each proxy's CPU per request goes: user space or the kernel. Runs the shared harness
# (../shared/bench/run.sh) from a temporary copy whose per-run CPU reading is split into the
# process's user and system ticks (/proc/PID/stat fields 14 and 15, all threads), then prints
# the medians across rounds in µs per request for each protocol and proxy. Arguments go to the
# harness; the default is the README's run.
#
#   benches/cpu_split.sh [HARNESS OPTIONS]     (default: -c nginx,haproxy,veer -d 5 -r 3)
#
# Needs a release build and the harness's tools (its README). VEER_BIN and HARNESS override the
# paths. Ticks are 10 ms: use runs of at least 5 s so that a figure rests on hundreds of ticks.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
harness=${HARNESS:-$root/../shared/bench/run.sh}
veer=${VEER_BIN:-$root/target/release/veer}
[ -x "$veer" ] || { echo "no veer binary at $veer (cargo build --release)" >&2; exit 2; }
[ -x "$harness" ] || { echo "no harness at $harness" >&2; exit 2; }
[ $# -gt 0 ] || set -- -c nginx,haproxy,veer -d 5 -r 3

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$(dirname "$harness")/." "$work/bench"
split="$work/split.txt"
# The harness reads utime+stime at the start and end of each measured run; beside each reading,
# keep the two apart. Each edit must apply exactly once, or the harness has changed under us.
python3 - "$work/bench/run.sh" "$split" <<'EOF'
import sys
path, out = sys.argv[1], sys.argv[2]
s = open(path).read()
edits = [
    ('cpu_ticks() {',
     "split_ticks() { sed 's/.*) //' \"/proc/$1/stat\" | awk '{print $12, $13}'; }\ncpu_ticks() {"),
    ('[ "$pid" != - ] && t0=$(cpu_ticks "$pid")',
     '[ "$pid" != - ] && t0=$(cpu_ticks "$pid") && sp0=$(split_ticks "$pid")'),
    ('t1=$(cpu_ticks "$pid"); ticks=$((t1 - t0));',
     't1=$(cpu_ticks "$pid"); sp1=$(split_ticks "$pid"); '
     'echo "$proto $name $r $sp0 $sp1 $out" >> "' + out + '"; ticks=$((t1 - t0));'),
]
for old, new in edits:
    n = s.count(old)
    want = 2 if old.startswith('[ "$pid"') else 1
    if n != want:
        sys.exit(f"cpu_split: the harness changed ({old!r} found {n} times, expected {want})")
    s = s.replace(old, new)
open(path, 'w').write(s)
EOF

"$work/bench/run.sh" --veer "$veer" --keep "$@" >&2
# The run directories the harness kept: read, then removed.
python3 - "$split" <<'EOF'
import collections, re, statistics, sys
tick_us = 1e6 / 100  # USER_HZ
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    proto, name, _round, u0, s0, u1, s1, out = line.split()
    text = open(out).read()
    if proto == "h1":
        m = re.search(r"(\d+) requests in", text)
    else:
        m = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", text)
    if not m or int(m.group(1)) == 0:
        continue
    n = int(m.group(1))
    rows[(proto, name)].append(((int(u1) - int(u0)) * tick_us / n, (int(s1) - int(s0)) * tick_us / n))
print("| protocol | proxy | user µs/req | kernel µs/req | total | kernel share | rounds (user + kernel) |")
print("|---|---|---|---|---|---|---|")
for (proto, name), v in rows.items():
    u = statistics.median(x[0] for x in v)
    k = statistics.median(x[1] for x in v)
    each = ", ".join(f"{a:.1f} + {b:.1f}" for a, b in v)
    print(f"| {'HTTP/1.1' if proto == 'h1' else 'h2c'} | {name} | {u:.2f} | {k:.2f} | {u + k:.2f} | {k / (u + k):.0%} | {each} |")
EOF
sed 's/.* //' "$split" | xargs -r -n1 dirname | sort -u | while read -r dir; do
    case "$dir" in /tmp/proxybench.*) rm -rf "$dir" ;; esac
done
