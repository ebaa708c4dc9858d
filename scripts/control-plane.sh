#!/usr/bin/env bash
# scripts/control-plane.sh - a throw-away Kubernetes control plane (etcd +
# kube-apiserver, nothing else) on loopback, for integration tests of rvs.
#
# Usage:
#   scripts/control-plane.sh up DIR      start it; state, certs, logs in DIR
#   scripts/control-plane.sh down DIR    stop what `up DIR` started (idempotent)
#   scripts/control-plane.sh status DIR  exit 0 iff both processes are alive
#   scripts/control-plane.sh stop-apiserver DIR   stop kube-apiserver only
#                                          (etcd and its data stay)
#   scripts/control-plane.sh start-apiserver DIR  start it again, with the
#                                          same flags, port and certs; waits
#                                          for /readyz
#
# `up` prints the admin kubeconfig path as the last line of stdout and writes
# DIR/env (shell syntax: KUBECONFIG, RVS_APISERVER_URL, RVS_ETCD_URL, ...).
# Everything listens on 127.0.0.1 only; etcd speaks plain HTTP (loopback),
# kube-apiserver TLS with client-certificate auth.
#
# What is there after `up`:
#   DIR/ca.{crt,key}                 cluster CA (also the client CA)
#   DIR/apiserver.{crt,key}          serving cert: 127.0.0.1, localhost,
#                                    the first service IP, kubernetes.default...
#                                    and RVS_APISERVER_EXTRA_SANS
#   DIR/kube-apiserver.args          its flags, one per line (start-apiserver
#                                    reuses them)
#   DIR/sa.{key,pub}                 service-account token signing key pair
#   DIR/admin.kubeconfig             O=system:masters client (certs embedded)
#   DIR/kube-proxy.kubeconfig        CN=system:kube-proxy client: the RBAC
#                                    identity a real kube-proxy has
#   DIR/{etcd,kube-apiserver}.{log,pid}
#   a Node object, as a kubelet would register it (labels, podCIDR, status
#   addresses and a Ready condition). There is no controller-manager, so
#   nothing creates EndpointSlices, ServiceAccounts or tokens by itself.
#
# Environment (all optional):
#   K8S_BIN                  dir with etcd, kube-apiserver, kubectl
#                            (default: output of scripts/k8s-binaries.sh)
#   RVS_ETCD_PORT            etcd client port      (default: a free port)
#   RVS_ETCD_PEER_PORT       etcd peer port        (default: a free port)
#   RVS_APISERVER_PORT       kube-apiserver port   (default: a free port)
#   RVS_SERVICE_CIDR         default 10.96.0.0/16; two comma-separated CIDRs
#                            (IPv4 first) make the cluster dual-stack
#   RVS_NODE_NAME            default rvs-node
#   RVS_NODE_IP              default 127.0.0.1 (Node InternalIP)
#   RVS_NODE_ZONE            default zone-a (topology.kubernetes.io/zone)
#   RVS_NODE_POD_CIDR        default 10.244.0.0/24 (spec.podCIDR(s))
#   RVS_READY_TIMEOUT        seconds to wait for /readyz (default 60)
#   RVS_APISERVER_EXTRA_SANS comma-separated extra names in the serving cert:
#                            IP addresses (e.g. 10.0.2.100, the address a
#                            test VM reaches the apiserver at) or DNS names
#
# Requirements: bash, openssl, coreutils; setsid (util-linux) if available.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
# Components in start order; `down` stops them in reverse.
readonly COMPONENTS=(etcd kube-apiserver)

log() { printf '[control-plane] %s\n' "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}
usage() {
	sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

# now_ms: wall clock in milliseconds (for timings).
now_ms() { date +%s%3N; }

# --- process helpers --------------------------------------------------------

# pid_of DIR NAME: pid recorded for NAME, if it is still that program.
# Checking /proc/PID/exe guards against pid reuse after a crash.
pid_of() {
	local pidfile="$1/$2.pid" pid exe
	[[ -f "${pidfile}" ]] || return 1
	pid="$(cat "${pidfile}")"
	[[ "${pid}" =~ ^[0-9]+$ ]] || return 1
	exe="$(readlink "/proc/${pid}/exe" 2>/dev/null)" || return 1
	[[ "$(basename "${exe% (deleted)}")" == "$2" ]] || return 1
	printf '%s\n' "${pid}"
}

# alive PID: the process exists and is not a zombie (a zombie has no exe;
# `kill -0` would still succeed on it when `up` reaps nothing on failure).
alive() { readlink "/proc/$1/exe" >/dev/null 2>&1; }

# stop DIR NAME: TERM the process, KILL it after 10 s, drop the pid file.
stop() {
	local dir="$1" name="$2" pid i
	if pid="$(pid_of "${dir}" "${name}")"; then
		log "stopping ${name} (pid ${pid})"
		kill -TERM "${pid}" 2>/dev/null || true
		for ((i = 0; i < 100; i++)); do
			alive "${pid}" || break
			sleep 0.1
		done
		if alive "${pid}"; then
			log "${name} ignored SIGTERM for 10s; sending SIGKILL"
			kill -KILL "${pid}" 2>/dev/null || true
			for ((i = 0; i < 50; i++)); do
				alive "${pid}" || break
				sleep 0.1
			done
		fi
		if alive "${pid}"; then
			die "${name} (pid ${pid}) survived SIGKILL"
		fi
	fi
	rm -f "${dir}/${name}.pid"
}

# spawn DIR NAME ARGS...: start $K8S_BIN/NAME detached (own session, stdin
# from /dev/null, output to DIR/NAME.log) and record its pid in DIR/NAME.pid.
spawn() {
	local dir="$1" name="$2"
	shift 2
	local -a launcher=()
	command -v setsid >/dev/null 2>&1 && launcher=(setsid)
	# Non-interactive bash: the background job is not a process-group
	# leader, so setsid execs in place and $! is the component's own pid.
	"${launcher[@]}" "${K8S_BIN}/${name}" "$@" </dev/null >"${dir}/${name}.log" 2>&1 &
	local pid=$! i
	printf '%s\n' "${pid}" >"${dir}/${name}.pid"
	# Wait (briefly) until the forked shell has exec'd the component, so
	# that pid_of recognises it from now on.
	for ((i = 0; i < 100; i++)); do
		pid_of "${dir}" "${name}" >/dev/null && return 0
		alive "${pid}" || break
		sleep 0.05
	done
	pid_of "${dir}" "${name}" >/dev/null || die "${name} failed to start; see ${dir}/${name}.log"
}

# port_in_use PORT: true if any TCP socket (v4 or v6, any state) uses PORT
# locally. Reads /proc so it needs neither ss nor netstat.
port_in_use() {
	local hex
	hex="$(printf ':%04X ' "$1")"
	grep -q -- "${hex}" /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# free_port [EXCLUDE...]: a currently unused port in 20000-32767 (below the
# default ip_local_port_range, so outgoing connections will not grab it).
free_port() {
	local p i
	for ((i = 0; i < 200; i++)); do
		p=$((20000 + RANDOM % 12768))
		[[ " $* " == *" ${p} "* ]] && continue
		port_in_use "${p}" || {
			printf '%s\n' "${p}"
			return 0
		}
	done
	die "no free TCP port found in 20000-32767"
}

# --- certificates -----------------------------------------------------------

# new_key FILE: an EC P-256 private key (fast to generate; accepted by etcd,
# kube-apiserver and for service-account token signing as ES256).
new_key() {
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
	chmod 600 "$1"
}

# sign DIR NAME SUBJECT EXTENSIONS: DIR/NAME.{key,crt} signed by DIR/ca.
sign() {
	local dir="$1" name="$2" subj="$3" ext="$4"
	new_key "${dir}/${name}.key"
	openssl req -new -key "${dir}/${name}.key" -subj "${subj}" -out "${dir}/${name}.csr" 2>/dev/null
	printf '%s\n' "${ext}" >"${dir}/${name}.ext"
	openssl x509 -req -in "${dir}/${name}.csr" -CA "${dir}/ca.crt" -CAkey "${dir}/ca.key" \
		-CAcreateserial -days 365 -sha256 -extfile "${dir}/${name}.ext" \
		-out "${dir}/${name}.crt" 2>/dev/null
	rm -f "${dir}/${name}.csr" "${dir}/${name}.ext"
}

# first_service_ip CIDR: the first usable address (.1) of an IPv4 CIDR; it is
# what the apiserver allocates to default/kubernetes.
first_service_ip() {
	local net="${1%/*}" a b c d
	IFS=. read -r a b c d <<<"${net}"
	printf '%d.%d.%d.%d\n' "${a}" "${b}" "${c}" "$((d + 1))"
}

# extra_sans: RVS_APISERVER_EXTRA_SANS as subjectAltName entries (",IP:a,DNS:b"),
# empty when unset. An entry of digits and dots, or with a colon, is an IP.
extra_sans() {
	local list="${RVS_APISERVER_EXTRA_SANS:-}" entry out=""
	local -a entries=()
	IFS=, read -r -a entries <<<"${list}"
	for entry in "${entries[@]}"; do
		entry="${entry// /}"
		[[ -n "${entry}" ]] || continue
		if [[ "${entry}" =~ ^[0-9.]+$ || "${entry}" == *:* ]]; then
			out+=",IP:${entry}"
		elif [[ "${entry}" =~ ^[A-Za-z0-9.-]+$ ]]; then
			out+=",DNS:${entry}"
		else
			die "RVS_APISERVER_EXTRA_SANS: ${entry@Q} is neither an IP address nor a DNS name"
		fi
	done
	printf '%s\n' "${out}"
}

make_certs() {
	local dir="$1" svc_ip="$2" extra
	extra="$(extra_sans)"
	new_key "${dir}/ca.key"
	openssl req -x509 -new -key "${dir}/ca.key" -subj "/CN=rvs-test-ca" -days 365 -sha256 \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
		-out "${dir}/ca.crt" 2>/dev/null
	sign "${dir}" apiserver "/CN=kube-apiserver" "$(printf '%s\n' \
		"basicConstraints=critical,CA:FALSE" \
		"keyUsage=critical,digitalSignature,keyEncipherment" \
		"extendedKeyUsage=serverAuth" \
		"subjectAltName=IP:127.0.0.1,DNS:localhost,IP:${svc_ip},DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local${extra}")"
	local client_ext
	client_ext="$(printf '%s\n' "basicConstraints=critical,CA:FALSE" \
		"keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=clientAuth")"
	sign "${dir}" admin "/O=system:masters/CN=rvs-admin" "${client_ext}"
	# Bound to ClusterRole system:node-proxier by the default RBAC policy.
	sign "${dir}" kube-proxy "/CN=system:kube-proxy" "${client_ext}"
	new_key "${dir}/sa.key"
	openssl pkey -in "${dir}/sa.key" -pubout -out "${dir}/sa.pub" 2>/dev/null
}

# write_kubeconfig DIR USER URL: DIR/USER.kubeconfig with embedded certs.
write_kubeconfig() {
	local dir="$1" user="$2" url="$3"
	local kc="${dir}/${user}.kubeconfig"
	local -a k=("${K8S_BIN}/kubectl" config --kubeconfig="${kc}")
	rm -f "${kc}"
	"${k[@]}" set-cluster rvs --server="${url}" --certificate-authority="${dir}/ca.crt" --embed-certs=true >/dev/null
	"${k[@]}" set-credentials "${user}" --client-certificate="${dir}/${user}.crt" \
		--client-key="${dir}/${user}.key" --embed-certs=true >/dev/null
	"${k[@]}" set-context rvs --cluster=rvs --user="${user}" >/dev/null
	"${k[@]}" use-context rvs >/dev/null
	chmod 600 "${kc}"
}

# --- the Node object ----------------------------------------------------------

# register_node KUBECTL...: create the test Node the way a kubelet would:
# the object with labels and podCIDR(s), then its status (a subresource, so a
# separate request) with addresses and a Ready condition.
register_node() {
	local name="${RVS_NODE_NAME:-rvs-node}" ip="${RVS_NODE_IP:-127.0.0.1}"
	local zone="${RVS_NODE_ZONE:-zone-a}" podcidr="${RVS_NODE_POD_CIDR:-10.244.0.0/24}"
	local arch now kver
	case "$(uname -m)" in
	x86_64) arch=amd64 ;;
	aarch64 | arm64) arch=arm64 ;;
	*) arch="$(uname -m)" ;;
	esac
	now="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
	# "Kubernetes v1.37.2" -> v1.37.2, shown as the node's VERSION.
	kver="$("${K8S_BIN}/kube-apiserver" --version 2>/dev/null | awk '{print $2}')"
	"$@" apply -f - >/dev/null <<EOF
{
  "apiVersion": "v1",
  "kind": "Node",
  "metadata": {
    "name": "${name}",
    "labels": {
      "kubernetes.io/hostname": "${name}",
      "kubernetes.io/os": "linux",
      "kubernetes.io/arch": "${arch}",
      "topology.kubernetes.io/zone": "${zone}"
    }
  },
  "spec": {"podCIDR": "${podcidr}", "podCIDRs": ["${podcidr}"]}
}
EOF
	"$@" patch node "${name}" --subresource=status --type=merge -p "$(
		cat <<EOF
{"status": {
  "addresses": [
    {"type": "InternalIP", "address": "${ip}"},
    {"type": "Hostname", "address": "${name}"}
  ],
  "conditions": [
    {"type": "Ready", "status": "True", "reason": "KubeletReady",
     "message": "registered by scripts/control-plane.sh",
     "lastHeartbeatTime": "${now}", "lastTransitionTime": "${now}"}
  ],
  "nodeInfo": {"kubeletVersion": "${kver}", "operatingSystem": "linux",
               "architecture": "${arch}"}
}}
EOF
	)" >/dev/null
	# The TaintNodesByCondition admission plugin taints new nodes not-ready;
	# with no node-lifecycle controller to lift it, do what it would do.
	"$@" taint node "${name}" node.kubernetes.io/not-ready:NoSchedule- >/dev/null 2>&1 || true
	log "node ${name} registered (InternalIP ${ip}, zone ${zone}, podCIDR ${podcidr})"
}

# --- kube-apiserver (re)start -------------------------------------------------

# wait_ready DIR: wait for /readyz with the admin kubeconfig, failing fast if
# a component died, and after RVS_READY_TIMEOUT seconds.
wait_ready() {
	local dir="$1" c timeout="${RVS_READY_TIMEOUT:-60}" deadline
	deadline=$(($(now_ms) + timeout * 1000))
	until "${K8S_BIN}/kubectl" --kubeconfig="${dir}/admin.kubeconfig" \
		get --raw /readyz --request-timeout=2s >/dev/null 2>&1; do
		for c in "${COMPONENTS[@]}"; do
			if ! pid_of "${dir}" "${c}" >/dev/null; then
				grep -v "FLAG:" "${dir}/${c}.log" | tail -n 20 >&2 || true
				die "${c} exited during startup; see ${dir}/${c}.log"
			fi
		done
		if (($(now_ms) > deadline)); then
			grep -v "FLAG:" "${dir}/kube-apiserver.log" | tail -n 20 >&2 || true
			die "kube-apiserver not ready after ${timeout}s; see ${dir}/kube-apiserver.log"
		fi
		sleep 0.2
	done
}

# start_apiserver DIR: spawn kube-apiserver with the flags in
# DIR/kube-apiserver.args and wait until it is ready. A previous run's log
# is kept as DIR/kube-apiserver.log.prev.
start_apiserver() {
	local dir="$1"
	local -a args=()
	mapfile -t args <"${dir}/kube-apiserver.args"
	if [[ -f "${dir}/kube-apiserver.log" ]]; then
		mv "${dir}/kube-apiserver.log" "${dir}/kube-apiserver.log.prev"
	fi
	spawn "${dir}" kube-apiserver "${args[@]}"
	wait_ready "${dir}"
}

# --- commands -----------------------------------------------------------------

cmd_down() {
	local dir="$1" i
	[[ -d "${dir}" ]] || return 0
	for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
		stop "${dir}" "${COMPONENTS[i]}"
	done
	log "down (${dir})"
}

cmd_status() {
	local dir="$1" c rc=0 pid
	for c in "${COMPONENTS[@]}"; do
		if pid="$(pid_of "${dir}" "${c}")"; then
			log "${c}: running (pid ${pid})"
		else
			log "${c}: not running"
			rc=1
		fi
	done
	return "${rc}"
}

cmd_up() {
	local dir="$1" c
	command -v openssl >/dev/null 2>&1 || die "'openssl' not found (apt-get install openssl)"
	mkdir -p "${dir}"
	dir="$(cd "${dir}" && pwd)"
	for c in "${COMPONENTS[@]}"; do
		if pid_of "${dir}" "${c}" >/dev/null; then
			die "${c} from an earlier 'up ${dir}' is still running; run 'down ${dir}' first"
		fi
	done

	if [[ -z "${K8S_BIN:-}" ]]; then
		K8S_BIN="$("${SCRIPT_DIR}/k8s-binaries.sh" | tail -n1)"
	fi
	for c in etcd kube-apiserver kubectl; do
		[[ -x "${K8S_BIN}/${c}" ]] || die "${K8S_BIN}/${c} missing (K8S_BIN=${K8S_BIN})"
	done

	local t0 svc_cidr svc_ip etcd_port peer_port api_port
	t0="$(now_ms)"
	svc_cidr="${RVS_SERVICE_CIDR:-10.96.0.0/16}"
	svc_ip="$(first_service_ip "${svc_cidr%%,*}")"
	etcd_port="${RVS_ETCD_PORT:-$(free_port)}"
	peer_port="${RVS_ETCD_PEER_PORT:-$(free_port "${etcd_port}")}"
	api_port="${RVS_APISERVER_PORT:-$(free_port "${etcd_port}" "${peer_port}")}"
	local etcd_url="http://127.0.0.1:${etcd_port}"
	local api_url="https://127.0.0.1:${api_port}"

	# Fresh state each time: certs are cheap, and stale etcd data would
	# carry objects over from an earlier run.
	rm -rf "${dir}/etcd-data"
	make_certs "${dir}" "${svc_ip}"
	write_kubeconfig "${dir}" admin "${api_url}"
	write_kubeconfig "${dir}" kube-proxy "${api_url}"
	local -a kubectl=("${K8S_BIN}/kubectl" --kubeconfig="${dir}/admin.kubeconfig")

	# If anything below fails (set -e, die), do not leave half a control
	# plane behind: the EXIT trap stops it unless `up` got to the end.
	UP_DIR="${dir}"
	UP_OK=0
	trap 'if [[ "${UP_OK}" != 1 ]]; then log "up failed; stopping what was started"; cmd_down "${UP_DIR}"; fi' EXIT

	spawn "${dir}" etcd \
		--name=rvs \
		--data-dir="${dir}/etcd-data" \
		--listen-client-urls="${etcd_url}" \
		--advertise-client-urls="${etcd_url}" \
		--listen-peer-urls="http://127.0.0.1:${peer_port}" \
		--initial-advertise-peer-urls="http://127.0.0.1:${peer_port}" \
		--initial-cluster="rvs=http://127.0.0.1:${peer_port}" \
		--initial-cluster-state=new \
		--unsafe-no-fsync \
		--log-level=warn

	# The flags are kept so that start-apiserver brings it back the same.
	# --shutdown-watch-termination-grace-period: on SIGTERM, end active
	# watches (clients see the stream close) and exit; with the default 0
	# it stops listening but keeps them open until it is killed, 10 s later.
	printf '%s\n' \
		--etcd-servers="${etcd_url}" \
		--bind-address=127.0.0.1 \
		--advertise-address=127.0.0.1 \
		--secure-port="${api_port}" \
		--tls-cert-file="${dir}/apiserver.crt" \
		--tls-private-key-file="${dir}/apiserver.key" \
		--client-ca-file="${dir}/ca.crt" \
		--service-cluster-ip-range="${svc_cidr}" \
		--service-account-issuer=https://kubernetes.default.svc.cluster.local \
		--service-account-key-file="${dir}/sa.pub" \
		--service-account-signing-key-file="${dir}/sa.key" \
		--authorization-mode=RBAC,Node \
		--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultStorageClass,DefaultTolerationSeconds,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ResourceQuota,NodeRestriction,Priority \
		--allow-privileged=true \
		--endpoint-reconciler-type=none \
		--profiling=false \
		--shutdown-watch-termination-grace-period=2s \
		--v=1 >"${dir}/kube-apiserver.args"
	start_apiserver "${dir}"
	local t_ready
	t_ready="$(now_ms)"
	log "apiserver ready at ${api_url} after $(((t_ready - t0) / 1000)).$(printf '%03d' $(((t_ready - t0) % 1000)))s"

	register_node "${kubectl[@]}"

	cat >"${dir}/env" <<EOF
# Written by scripts/control-plane.sh up; source it.
KUBECONFIG=${dir}/admin.kubeconfig
RVS_KUBEPROXY_KUBECONFIG=${dir}/kube-proxy.kubeconfig
RVS_APISERVER_URL=${api_url}
RVS_ETCD_URL=${etcd_url}
RVS_NODE_NAME=${RVS_NODE_NAME:-rvs-node}
RVS_SERVICE_CIDR=${svc_cidr}
K8S_BIN=${K8S_BIN}
export KUBECONFIG RVS_KUBEPROXY_KUBECONFIG RVS_APISERVER_URL RVS_ETCD_URL RVS_NODE_NAME RVS_SERVICE_CIDR K8S_BIN
EOF
	local t1
	t1="$(now_ms)"
	log "up in $(((t1 - t0) / 1000)).$(printf '%03d' $(((t1 - t0) % 1000)))s; env in ${dir}/env"
	UP_OK=1
	printf '%s\n' "${dir}/admin.kubeconfig"
}

# load_env DIR: K8S_BIN as `up DIR` found it (unless set), for the commands
# that act on a running control plane.
load_env() {
	local dir="$1" line
	[[ -f "${dir}/env" ]] || die "${dir}/env missing: was '$0 up ${dir}' run?"
	if [[ -z "${K8S_BIN:-}" ]]; then
		line="$(grep -m1 '^K8S_BIN=' "${dir}/env")" || die "${dir}/env names no K8S_BIN"
		K8S_BIN="${line#K8S_BIN=}"
	fi
}

cmd_stop_apiserver() {
	local dir="$1"
	[[ -d "${dir}" ]] || die "${dir}: no such control plane"
	stop "${dir}" kube-apiserver
}

cmd_start_apiserver() {
	local dir t0 t1
	dir="$(cd "$1" && pwd)"
	load_env "${dir}"
	pid_of "${dir}" etcd >/dev/null || die "etcd is not running in ${dir}; run 'up' instead"
	if pid_of "${dir}" kube-apiserver >/dev/null; then
		die "kube-apiserver is already running in ${dir}"
	fi
	t0="$(now_ms)"
	# Do not leave an apiserver that never got ready behind.
	UP_DIR="${dir}"
	UP_OK=0
	trap 'if [[ "${UP_OK}" != 1 ]]; then log "start-apiserver failed; stopping it"; stop "${UP_DIR}" kube-apiserver; fi' EXIT
	start_apiserver "${dir}"
	UP_OK=1
	t1="$(now_ms)"
	log "kube-apiserver ready again after $(((t1 - t0) / 1000)).$(printf '%03d' $(((t1 - t0) % 1000)))s"
}

main() {
	[[ $# -eq 2 ]] || usage
	case "$1" in
	up) cmd_up "$2" ;;
	down) cmd_down "$2" ;;
	status) cmd_status "$2" ;;
	stop-apiserver) cmd_stop_apiserver "$2" ;;
	start-apiserver) cmd_start_apiserver "$2" ;;
	*) usage ;;
	esac
}

main "$@"
