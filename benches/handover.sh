#!/usr/bin/env bash
# Connection errors across one process replacement under connect-per-request load.
#
#   benches/handover.sh upgrade  [VEER]   # veer run --upgrade (sockets handed over)
#   benches/handover.sh sigterm  [VEER]   # a second veer on the port (SO_REUSEPORT), then SIGTERM
#
# Needs wrk and nginx (apt-get install -y wrk nginx-light). Runs an NGINX upstream on
# 127.0.0.1:18190 and veer on 127.0.0.1:18180 (both stopped on exit), puts
# `wrk -t1 -c32 -d4s -H 'Connection: close'` on veer, replaces veer 1.5 s in, and prints wrk's
# summary: any "Socket errors" line is a lost connection.
set -euo pipefail
mode=${1:?usage: handover.sh upgrade|sigterm [VEER]}
veer=${2:-target/release/veer}
dir=$(mktemp -d /tmp/veer-handover.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT

cat > "$dir/nginx.conf" <<EOT
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/nginx.err;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  server { listen 127.0.0.1:18190; location / { return 200 "app\n"; } }
}
EOT
nginx -c "$dir/nginx.conf" -p "$dir" & pids+=($!)

socket=""
[ "$mode" = upgrade ] && socket="upgrade_socket = \"$dir/upgrade.sock\""
cat > "$dir/veer.toml" <<EOT
[listen]
http = "127.0.0.1:18180"
$socket

[pools.app]
servers = ["127.0.0.1:18190"]

[[routes]]
name = "web"
split = { app = 1 }
EOT
"$veer" run --config "$dir/veer.toml" 2> "$dir/old.log" & old=$!; pids+=($old)
sleep 0.5
timeout 20 wrk -t1 -c32 -d4s -H 'Connection: close' http://127.0.0.1:18180/ > "$dir/wrk.out" & wrk=$!
sleep 1.5
if [ "$mode" = upgrade ]; then
  "$veer" run --upgrade --config "$dir/veer.toml" 2> "$dir/new.log" & pids+=($!)
else
  "$veer" run --config "$dir/veer.toml" 2> "$dir/new.log" & pids+=($!)
  sleep 0.3
  kill -TERM "$old"
fi
wait "$wrk"
timeout 30 tail --pid="$old" -f /dev/null
cat "$dir/wrk.out"
