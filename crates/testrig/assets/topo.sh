# Topology helpers for rvs VM tests. Source with `. /usr/lib/rvs/topo.sh`.
#
# The VM's root network namespace plays the node (the IPVS director). Each
# test host is a network namespace joined to it by a veth pair:
#   host NAME with index N:  NAME:eth0 = 10.0.N.2/24, fd00:N::2/64
#                            root:v-NAME = 10.0.N.1/24, fd00:N::1/64
# and default routes through the root namespace, so traffic between hosts
# and to virtual addresses crosses the director. iproute2's ip is called by
# its full path: busybox's ash would run its own `ip` applet otherwise.

IP=/usr/sbin/ip

# topo_forwarding: let the root namespace route between test hosts.
topo_forwarding() {
    echo 1 > /proc/sys/net/ipv4/ip_forward
    echo 1 > /proc/sys/net/ipv6/conf/all/forwarding
}

# topo_host NAME N: create test host NAME with index N (1..250).
topo_host() {
    name=$1 n=$2
    $IP netns add "$name" &&
    $IP link add "v-$name" type veth peer name eth0 netns "$name" &&
    $IP addr add "10.0.$n.1/24" dev "v-$name" &&
    $IP -6 addr add "fd00:$n::1/64" dev "v-$name" nodad &&
    $IP link set "v-$name" up &&
    $IP -n "$name" link set lo up &&
    $IP -n "$name" addr add "10.0.$n.2/24" dev eth0 &&
    $IP -n "$name" -6 addr add "fd00:$n::2/64" dev eth0 nodad &&
    $IP -n "$name" link set eth0 up &&
    $IP -n "$name" route add default via "10.0.$n.1" &&
    $IP -n "$name" -6 route add default via "fd00:$n::1"
}

# topo_backends: the usual cast, forwarding on: host client (index 1),
# and hosts b1 (2) and b2 (3) serving "backend-one" and "backend-two"
# over HTTP on port 80.
topo_backends() {
    topo_forwarding &&
    topo_host client 1 &&
    topo_host b1 2 &&
    topo_host b2 3 &&
    topo_http b1 backend-one &&
    topo_http b2 backend-two
}

# topo_wait_for CONDITION [TRIES]: evaluate CONDITION every 0.2 s until it
# holds, TRIES times at most (150 by default: 30 s); fail saying what was
# waited for otherwise.
topo_wait_for() {
    tries=${2:-150} i=0
    until eval "$1"; do
        i=$((i + 1))
        [ "$i" -lt "$tries" ] || { echo "timed out waiting for: $1"; return 1; }
        sleep 0.2
    done
}

# topo_log FILE: from here on append the script's stderr (the logs of the
# daemons it starts) to FILE, and print FILE after a "== log" line when
# the script exits, so that a failed run shows them.
topo_log() {
    exec 2>>"$1"
    # shellcheck disable=SC2064 # FILE is expanded now, on purpose
    trap "echo '== log'; cat '$1'" EXIT
}

# topo_addr N [6]: the address of test host N (IPv6 with a second argument).
topo_addr() {
    if [ -n "${2:-}" ]; then echo "fd00:$1::2"; else echo "10.0.$1.2"; fi
}

# topo_http NAME TEXT [PORT]: serve TEXT over HTTP from host NAME.
topo_http() {
    name=$1 text=$2 port=${3:-80}
    mkdir -p "/srv/$name-$port"
    echo "$text" > "/srv/$name-$port/index.html"
    $IP netns exec "$name" busybox httpd -p "$port" -h "/srv/$name-$port"
}

# topo_vip ADDR/PREFIX: bind a virtual address to the kube-ipvs0 dummy
# device of the root namespace, as kube-proxy's IPVS mode does.
topo_vip() {
    $IP link show kube-ipvs0 > /dev/null 2>&1 || $IP link add kube-ipvs0 type dummy
    $IP addr add "$1" dev kube-ipvs0
}

# topo_get NAME ADDR [PORT]: HTTP GET / from host NAME to ADDR:PORT (port
# 80 by default) and print the body; fails unless the answer is 200 OK.
# busybox nc, not wget: the static busybox's wget crashes in glibc's resolver.
topo_get() {
    reply=$(printf 'GET / HTTP/1.0\r\n\r\n' |
        $IP netns exec "$1" timeout 10 busybox nc -w 5 "$2" "${3:-80}") || return 1
    case "$reply" in
        "HTTP/1."?" 200 "*) ;;
        *) echo "topo_get: no 200 OK from $2:${3:-80}: $reply" >&2; return 1 ;;
    esac
    printf '%s\n' "$reply" | tr -d '\r' | sed '1,/^$/d'
}
