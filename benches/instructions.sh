#!/usr/bin/env bash
# Instructions per request: a figure to steer by that the machine's noise does not move.
# Runs the proxy under callgrind, serves N1 keep-alive GETs (8 connections) through a 90/10
# split to a local upstream to warm it up, zeroes callgrind's counters, serves N2 - N1 more and
# dumps: Ir / (N2 - N1) is what one request costs, start and shutdown never counted. NGINX and
# HAProxy run the same way (one process, one thread, keep-alive to the upstream), for comparison.
#
#   benches/instructions.sh [BIN | nginx | haproxy] [N1] [N2]
#                            (default target/release/veer 2000 6000)
#
# FEATURE=sticky|pins|mirror|health|access measures veer with that feature on: a sticky cookie
# set on every answer (the client sends none back), three pin rules that match nothing, a copy
# of every request to a shadow pool, active checks every second on both pools, or the access log
# (written to /dev/null).
# PROTO=h2 sends the requests as h2c instead (h2load -c4 -m8, prior knowledge; veer only, needs
# nghttp2-client).
# BODY=N has the upstream answer with N bytes instead of 3.
# KEEP=DIR keeps the measured dump there (callgrind.measured), for
# `callgrind_annotate --inclusive=yes`.
#
# Needs valgrind and python3 (and nginx or haproxy for those). Every wait is bounded.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
subject="${1:-target/release/veer}"
n1="${2:-2000}"
n2="${3:-6000}"
case "${PROTO:-h1}" in
    h1) ;;
    h2) command -v h2load >/dev/null || { echo "PROTO=h2 needs h2load (apt-get install -y nghttp2-client)" >&2; exit 2; } ;;
    *) echo "unknown PROTO '$PROTO' (h1, h2)" >&2; exit 2 ;;
esac
case "${FEATURE:-}" in
    ""|sticky|pins|mirror|health|access) ;;
    *) echo "unknown FEATURE '$FEATURE' (sticky, pins, mirror, health, access)" >&2; exit 2 ;;
esac
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install -y valgrind)" >&2; exit 2; }
case "$subject" in
    nginx|haproxy) command -v "$subject" >/dev/null || { echo "needs $subject" >&2; exit 2; } ;;
    *) [ -x "$subject" ] || { echo "no veer binary at $subject (cargo build --release)" >&2; exit 2; } ;;
esac
work="$(mktemp -d)"
upstream_pid=""
cleanup() {
    [ -n "$upstream_pid" ] && kill "$upstream_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

python3 "$here/instructions/load.py" upstream "$work/upstream.port" "${BODY:-3}" &
upstream_pid=$!
for _ in $(seq 100); do [ -s "$work/upstream.port" ] && break; sleep 0.1; done
up="127.0.0.1:$(cat "$work/upstream.port")"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The lines FEATURE adds to veer's config (its route is the last table written before them).
feature_config() {
    case "${FEATURE:-}" in
        "") ;;
        sticky) echo 'sticky = { cookie = "veer_bench" }' ;;
        pins) printf '%s\n' '[[routes.pin]]' 'header = "x-canary"' 'pool = "green"' \
                  '[[routes.pin]]' 'cookie = "beta"' 'pool = "green"' \
                  '[[routes.pin]]' 'source = ["10.1.0.0/16"]' 'pool = "green"' ;;
        mirror) printf '%s\n' '[routes.mirror]' 'pool = "shadow"' 'percent = 100' \
                    '[pools.shadow]' "servers = [\"$up\"]" ;;
        health) printf '%s\n' '[pools.blue.health]' 'path = "/"' 'interval = "1s"' \
                    '[pools.green.health]' 'path = "/"' 'interval = "1s"' ;;
        access) ;; # under [log] above
    esac
}

# Writes the subject's config for `port` and prints the command that serves it.
command_for() {
    local port="$1"
    case "$subject" in
        nginx)
            cat > "$work/nginx.conf" <<CONF
worker_processes 1;
master_process off;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx.err warn;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream app { server $up weight=9; server $up weight=1; keepalive 64; }
  server {
    listen 127.0.0.1:$port;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
            echo "nginx -p $work -c $work/nginx.conf" ;;
        haproxy)
            cat > "$work/haproxy.cfg" <<CONF
global
  nbthread 1
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:$port
  default_backend app
backend app
  balance roundrobin
  server blue $up weight 9
  server green $up weight 1
CONF
            echo "haproxy -db -f $work/haproxy.cfg" ;;
        *)
            cat > "$work/veer.toml" <<TOML
[listen]
http = "127.0.0.1:$port"
[admin]
listen = "127.0.0.1:$(free_port)"
[proxy]
workers = 1
[log]
level = "warn"
access = $([ "${FEATURE:-}" = access ] && echo true || echo false)
[pools.blue]
servers = ["$up"]
[pools.green]
servers = ["$up"]
[[routes]]
name = "bench"
split = { blue = 90, green = 10 }
TOML
            feature_config >> "$work/veer.toml"
            echo "$subject run --config $work/veer.toml" ;;
    esac
}

# Sends $1 requests to the subject listening on $2.
load() {
    local n="$1" port="$2"
    if [ "${PROTO:-h1}" = h2 ]; then
        timeout 600 h2load -c4 -m8 -n "$n" "http://127.0.0.1:$port/" > "$work/h2load.$n"
        grep -q "^status codes: $n 2xx" "$work/h2load.$n" \
            || { echo "not every h2 answer was 2xx:" >&2; cat "$work/h2load.$n" >&2; exit 1; }
    else
        timeout 600 python3 "$here/instructions/load.py" client "127.0.0.1:$port" "$n" 8
    fi
}

# One process under callgrind: N1 requests to warm it up, its counters zeroed, N2 - N1 requests,
# a dump. The dump holds exactly what those requests cost: start-up (whose clock calibration
# varies by millions of instructions under callgrind) and shutdown are never counted.
port="$(free_port)"
cmd="$(command_for "$port")"
out="$work/callgrind.out"
# shellcheck disable=SC2086
valgrind --tool=callgrind --vgdb=yes --callgrind-out-file="$out" $cmd > /dev/null 2> "$work/valgrind.log" &
pid=$!
ready=0
for _ in $(seq 600); do
    if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),1)" 2>/dev/null; then
        ready=1; break
    fi
    sleep 0.1
done
[ "$ready" = 1 ] || { echo "$subject did not listen within 60 s" >&2; cat "$work/valgrind.log" >&2; kill -9 "$pid"; exit 1; }
load "$n1" "$port"
timeout 60 callgrind_control --zero "$pid" > /dev/null 2>&1
load $(( n2 - n1 )) "$port"
timeout 60 callgrind_control --dump=measured "$pid" > /dev/null 2>&1
kill -TERM "$pid"
timeout 120 tail --pid="$pid" -f /dev/null || { kill -9 "$pid"; echo "$subject did not exit" >&2; exit 1; }
wait "$pid" || true
dump="$(grep -l "^desc: Trigger: dump measured" "$out"* | head -1 || true)"
[ -n "$dump" ] || { echo "callgrind wrote no dump for the measured requests" >&2; exit 1; }
[ -n "${KEEP:-}" ] && mkdir -p "$KEEP" && cp "$dump" "$KEEP/callgrind.measured"
ir="$(awk '/^(summary|totals):/ { print $2; exit }' "$dump")"
per=$(( ir / (n2 - n1) ))
echo "$subject: $per instructions per request (Ir $ir for requests $n1 to $n2)"
