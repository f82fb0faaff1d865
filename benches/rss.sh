#!/usr/bin/env bash
# Resident memory under a long load: veer, and NGINX as the reference, each proxying keep-alive
# GETs (wrk -c64) through a 90/10 split to an NGINX upstream. veer's VmRSS is read after every
# minute of load, so a leak shows as a rising column; NGINX's worker is read after one minute.
#
#   benches/rss.sh [BIN] [MINUTES]      (default target/release/veer 10)
#   PROTO=h2 benches/rss.sh ...         h2c with prior knowledge instead (h2load -c16 -m8)
#
# Needs nginx and wrk (apt-get install -y nginx-light wrk; nghttp2-client for h2load). Every
# run ends by itself (-d, under timeout) and every process started here is stopped by its PID
# on exit.
set -euo pipefail
bin="${1:-target/release/veer}"
minutes="${2:-10}"
proto="${PROTO:-h1}"
case "$proto" in
    h1) driver=wrk ;;
    h2) driver=h2load ;;
    *) echo "PROTO is h1 or h2, not $proto" >&2; exit 2 ;;
esac
for tool in nginx "$driver" python3; do
    command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 2; }
done
[ -x "$bin" ] || { echo "no veer binary at $bin (cargo build --release)" >&2; exit 2; }
work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 100); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1',$1),1)" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on $1 after 10 s" >&2
    exit 1
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
# One minute of load on port $1, its output in $2; rate prints its requests per second.
load() {
    if [ "$proto" = h1 ]; then
        timeout 90 wrk -t1 -c64 -d60s "http://127.0.0.1:$1/" > "$2"
    else
        timeout 90 h2load -t1 -c16 -m8 -D60 "http://127.0.0.1:$1/" > "$2"
    fi
}
rate() { awk '/Requests\/sec/ { print $2 } /^finished in/ { print $4 }' "$1"; }

# Starts one NGINX in $work/$1 whose http block holds $2; prints its master's PID.
start_nginx() {
    local dir="$work/$1"
    mkdir -p "$dir"
    cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  $2
}
CONF
    nginx -p "$dir" -c "$dir/nginx.conf" > /dev/null 2>&1 &
    echo $!
}

up="$(free_port)"
pids+=("$(start_nginx up "keepalive_timeout 300s;
  server { listen 127.0.0.1:$up; location / { return 200 \"ok\\n\"; } }")")
wait_port "$up"

# NGINX as the proxy: its worker's RSS after a minute of the same load.
ref="$(free_port)"
h2=""
[ "$proto" = h2 ] && h2=" http2"
ref_master="$(start_nginx ref "upstream app { server 127.0.0.1:$up weight=9; server 127.0.0.1:$up weight=1; keepalive 64; }
  server {
    listen 127.0.0.1:$ref$h2;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
  }")"
pids+=("$ref_master")
wait_port "$ref"
load "$ref" "$work/ref.out"
ref_worker="$(pgrep -P "$ref_master" | head -1)"
echo "NGINX worker after 1 min: $(rss_kib "$ref_worker") KiB ($(rate "$work/ref.out") req/s)"
kill "$ref_master"

port="$(free_port)"
cat > "$work/veer.toml" <<TOML
[listen]
http = "127.0.0.1:$port"
[admin]
listen = "127.0.0.1:$(free_port)"
[proxy]
workers = 1
[log]
level = "warn"
[pools.blue]
servers = ["127.0.0.1:$up"]
[pools.green]
servers = ["127.0.0.1:$up"]
[[routes]]
name = "bench"
split = { blue = 90, green = 10 }
TOML
"$bin" run --config "$work/veer.toml" &
veer=$!
pids+=("$veer")
wait_port "$port"
echo "veer at start: $(rss_kib "$veer") KiB"
for minute in $(seq "$minutes"); do
    load "$port" "$work/veer.out"
    echo "veer after $minute min: $(rss_kib "$veer") KiB ($(rate "$work/veer.out") req/s)"
done
