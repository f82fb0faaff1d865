#!/usr/bin/env bash
# Instructions per request: a figure to steer by that the machine's noise does not move.
# Runs veer under callgrind twice, serving N1 and then N2 keep-alive GETs (8 connections)
# through a 90/10 split to a local upstream, and reports (Ir(N2) - Ir(N1)) / (N2 - N1): the
# instructions one more request costs, start and shutdown cancelled out.
#
#   benches/instructions.sh [BIN] [N1] [N2]      (default target/release/veer 2000 6000)
#
# Needs valgrind and python3. Every wait is bounded.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:-target/release/veer}"
n1="${2:-2000}"
n2="${3:-6000}"
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install -y valgrind)" >&2; exit 2; }
[ -x "$bin" ] || { echo "no veer binary at $bin (cargo build --release)" >&2; exit 2; }
work="$(mktemp -d)"
upstream_pid=""
cleanup() {
    [ -n "$upstream_pid" ] && kill "$upstream_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

python3 "$here/instructions/load.py" upstream "$work/upstream.port" &
upstream_pid=$!
for _ in $(seq 100); do [ -s "$work/upstream.port" ] && break; sleep 0.1; done
up="127.0.0.1:$(cat "$work/upstream.port")"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Ir of one veer run serving $1 requests.
measure() {
    local n="$1" port admin out
    port="$(free_port)"
    admin="$(free_port)"
    cat > "$work/veer.toml" <<TOML
[listen]
http = "127.0.0.1:$port"
[admin]
listen = "127.0.0.1:$admin"
[proxy]
workers = 1
[log]
level = "warn"
[pools.blue]
servers = ["$up"]
[pools.green]
servers = ["$up"]
[[routes]]
name = "bench"
split = { blue = 90, green = 10 }
TOML
    out="$work/callgrind.$n"
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" run --config "$work/veer.toml" \
        2> "$work/valgrind.$n.log" &
    local pid=$!
    local ready=0
    for _ in $(seq 600); do
        if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),1)" 2>/dev/null; then
            ready=1; break
        fi
        sleep 0.1
    done
    [ "$ready" = 1 ] || { echo "veer did not listen within 60 s" >&2; cat "$work/valgrind.$n.log" >&2; kill -9 "$pid"; exit 1; }
    timeout 600 python3 "$here/instructions/load.py" client "127.0.0.1:$port" "$n" 8
    kill -TERM "$pid"
    timeout 120 tail --pid="$pid" -f /dev/null || { kill -9 "$pid"; echo "veer did not exit" >&2; exit 1; }
    wait "$pid" || true
    # Sum every thread's and part's totals.
    grep -h '^summary:' "$out"* | awk '{ s += $2 } END { print s }'
}

ir1="$(measure "$n1")"
ir2="$(measure "$n2")"
per=$(( (ir2 - ir1) / (n2 - n1) ))
echo "veer $("$bin" --version 2>/dev/null | head -n1): $per instructions per request (Ir $ir1 for $n1 requests, $ir2 for $n2)"
