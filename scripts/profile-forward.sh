#!/usr/bin/env bash
# Per-connection budget of the userspace forwarder beside HAProxy 2.6, on
# the forward bench's loopback setup (wrk -> proxy -> two nginx backends,
# `Connection: close`, so every request is a new connection both ways):
#
#   * syscalls per connection: `strace -c -f` on the proxy while wrk
#     runs, divided by the connections it accepted (accept4 calls that
#     returned a descriptor);
#   * CPU per connection, user and system: the proxy's utime/stime from
#     /proc/PID/stat over a wrk run without a tracer, divided by wrk's
#     requests;
#   * user-space instructions per connection: `valgrind --tool=callgrind`
#     (the machine's VM exposes no hardware counters to perf): a run
#     with wrk for PROFILE_CALLGRIND_SECONDS minus an idle one, so start
#     and stop cancel out, divided by wrk's requests.
#
# Usage: scripts/profile-forward.sh [rvsd|haproxy|all]  (root; installs
# wrk, haproxy, nginx-light, strace, valgrind from Debian when missing).
# PROFILE_SECONDS (default 5) per measured run, PROFILE_CONNS (default
# 64) concurrent connections, PROFILE_CALLGRIND_SECONDS (default 3),
# RVSD (default target/release/rvsd, built when missing). Prints one
# table; `PROFILE_STRACE_OUT=DIR` keeps each strace summary.
# Traffic stays on 127.0.0.0/8; every run is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."

which="${1:-all}"
seconds="${PROFILE_SECONDS:-5}"
conns="${PROFILE_CONNS:-64}"
cg_seconds="${PROFILE_CALLGRIND_SECONDS:-3}"
rvsd="${RVSD:-target/release/rvsd}"
rvsadm="${RVSADM:-target/release/rvsadm}"
backends=(127.0.81.1:18100 127.0.81.2:18100)
hap_addr=127.0.82.1:18200
rvs_addr=127.0.83.1:18300

need=()
for t in wrk:wrk haproxy:haproxy nginx:nginx-light strace:strace valgrind:valgrind taskset:util-linux; do
    PATH="$PATH:/usr/sbin" command -v "${t%%:*}" > /dev/null || need+=("${t#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" > /dev/null
fi
if [ ! -x "$rvsd" ] || [ ! -x "$rvsadm" ]; then
    cargo build -q --release -p rvsd -p rvsadm
fi

dir=$(mktemp -d /tmp/rvs-profile.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done
    wait 2> /dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

wait_port() { # ADDR
    local host=${1%:*} port=${1##*:}
    for _ in $(seq 200); do
        (exec 3<> "/dev/tcp/$host/$port") 2> /dev/null && return 0
        sleep 0.05
    done
    echo "profile-forward: $1 never accepted" >&2
    exit 1
}

servers=""
for b in "${backends[@]}"; do
    servers+="server { listen $b reuseport backlog=4096; access_log off; location = / { return 200 \"ok\\n\"; } } "
done
cat > "$dir/nginx.conf" << EOF
daemon off; master_process off; worker_processes 1; pid $dir/nginx.pid;
error_log stderr error; user root;
events { worker_connections 4096; }
http { keepalive_requests 1000000; client_body_temp_path $dir; proxy_temp_path $dir;
fastcgi_temp_path $dir; uwsgi_temp_path $dir; scgi_temp_path $dir;
default_type text/plain; $servers }
EOF
/usr/sbin/nginx -c "$dir/nginx.conf" -e stderr &
pids+=($!)
for b in "${backends[@]}"; do wait_port "$b"; done

# One proxy at a time on CPU 1, as the bench pins them. Sets proxy_pid.
start_proxy() { # NAME
    case $1 in
    haproxy)
        printf 'global\n  nbthread 1\n  maxconn 8000\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\nfrontend fe\n  bind %s\n  default_backend be\nbackend be\n  balance roundrobin\n  server a %s\n  server b %s\n' \
            "$hap_addr" "${backends[0]}" "${backends[1]}" > "$dir/haproxy.cfg"
        taskset -c 1 "${wrap[@]}" haproxy -f "$dir/haproxy.cfg" &
        proxy_pid=$!
        pids+=("$proxy_pid")
        wait_port "$hap_addr"
        ;;
    rvsd)
        rm -f "$dir/rvsd.sock"
        RUST_LOG=warn taskset -c 1 "${wrap[@]}" "$rvsd" --admin-socket "$dir/rvsd.sock" --workers 1 &
        proxy_pid=$!
        pids+=("$proxy_pid")
        for _ in $(seq 600); do [ -S "$dir/rvsd.sock" ] && break; sleep 0.05; done
        "$rvsadm" --target "unix:$dir/rvsd.sock" -A -t "$rvs_addr" -s rr
        for b in "${backends[@]}"; do
            "$rvsadm" --target "unix:$dir/rvsd.sock" -a -t "$rvs_addr" -r "$b" -m
        done
        wait_port "$rvs_addr"
        ;;
    esac
}
stop_proxy() {
    kill -TERM "$proxy_pid" 2> /dev/null || true
    wait "$proxy_pid" 2> /dev/null || true
}
addr_of() { [ "$1" = haproxy ] && echo "$hap_addr" || echo "$rvs_addr"; }
run_wrk() { # ADDR SECONDS -> requests
    taskset -c 0 wrk -t1 -c"$conns" -d"$2"s -H 'Connection: close' "http://$1/" |
        awk '/requests in/ { print $1 }'
}
cpu_ticks() { # PID -> "utime stime" of the process and its threads
    awk '{ print $14, $15 }' "/proc/$1/stat"
}

declare -A row
profile() { # NAME
    local name=$1 addr
    addr=$(addr_of "$name")

    # CPU per connection, no tracer.
    wrap=()
    start_proxy "$name"
    run_wrk "$addr" 1 > /dev/null # warm up
    local before after reqs hz
    hz=$(getconf CLK_TCK)
    read -r -a before <<< "$(cpu_ticks "$proxy_pid")"
    reqs=$(run_wrk "$addr" "$seconds")
    read -r -a after <<< "$(cpu_ticks "$proxy_pid")"
    row[$name.conns_per_s]=$(awk -v r="$reqs" -v s="$seconds" 'BEGIN { printf "%.0f", r / s }')
    row[$name.user_us]=$(awk -v a="${after[0]}" -v b="${before[0]}" -v r="$reqs" -v hz="$hz" 'BEGIN { printf "%.1f", (a - b) / hz * 1e6 / r }')
    row[$name.sys_us]=$(awk -v a="${after[1]}" -v b="${before[1]}" -v r="$reqs" -v hz="$hz" 'BEGIN { printf "%.1f", (a - b) / hz * 1e6 / r }')

    # Syscalls per connection under strace (counts, not times).
    local out="$dir/strace-$name.txt"
    timeout 120 strace -c -f -qq -o "$out" -p "$proxy_pid" &
    local tracer=$!
    sleep 1
    run_wrk "$addr" "$seconds" > /dev/null
    kill -INT "$tracer" 2> /dev/null || true
    wait "$tracer" 2> /dev/null || true
    stop_proxy
    [ -z "${PROFILE_STRACE_OUT:-}" ] || { mkdir -p "$PROFILE_STRACE_OUT"; cp "$out" "$PROFILE_STRACE_OUT/"; }
    # strace -c: % time, seconds, usecs/call, calls, errors, syscall
    local accepted
    accepted=$(awk '$NF ~ /^accept4?$/ { c = $4; e = ($6 == "") ? 0 : $5; print c - e }' "$out")
    row[$name.accepted]=$accepted
    row[$name.syscalls]=$(awk -v n="$accepted" '$NF != "total" && $4 ~ /^[0-9]+$/ { s += $4 } END { printf "%.1f", s / n }' "$out")
    row[$name.detail]=$(awk -v n="$accepted" '$NF != "total" && $NF != "syscall" && $4 ~ /^[0-9]+$/ && $4 / n >= 0.05 { printf "%s %.2f, ", $NF, $4 / n }' "$out")

    # User-space instructions per connection under callgrind: a run with
    # PROFILE_CALLGRIND_SECONDS of wrk minus an idle run, divided by its requests.
    local idle busy cg_reqs
    for phase in idle busy; do
        wrap=(valgrind --tool=callgrind --callgrind-out-file="$dir/cg-$name-$phase.out" -q)
        start_proxy "$name"
        if [ "$phase" = busy ]; then
            cg_reqs=$(taskset -c 0 wrk -t1 -c8 -d"$cg_seconds"s -H 'Connection: close' "http://$addr/" |
                awk '/requests in/ { print $1 }')
        fi
        stop_proxy
        sleep 0.5
        local ir
        ir=$(awk '/^summary:|^totals:/ { print $2; exit }' "$dir/cg-$name-$phase.out")
        if [ "$phase" = idle ]; then idle=$ir; else busy=$ir; fi
    done
    row[$name.user_instr]=$(awk -v b="$busy" -v i="$idle" -v r="$cg_reqs" 'BEGIN { printf "%.0f", (b - i) / r }')
}

echo "profile-forward: $which, ${seconds}s runs, $conns connections (wrk, Connection: close)" >&2
case $which in
all) names=(rvsd haproxy) ;;
rvsd | haproxy) names=("$which") ;;
*) echo "usage: $0 [rvsd|haproxy|all]" >&2; exit 2 ;;
esac
for n in "${names[@]}"; do profile "$n"; done

printf '| proxy | conns/s (no tracer) | CPU user µs/conn | CPU sys µs/conn | user instructions/conn | syscalls/conn | syscalls per connection |\n|---|---|---|---|---|---|---|\n'
for n in "${names[@]}"; do
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$n" "${row[$n.conns_per_s]}" "${row[$n.user_us]}" "${row[$n.sys_us]}" "${row[$n.user_instr]}" "${row[$n.syscalls]}" "${row[$n.detail]%, }"
done
