#!/usr/bin/env bash
# scripts/k8s-binaries.sh - build (once) and cache the Kubernetes binaries the
# integration tests run against: kube-apiserver, kube-proxy, kubectl and etcd.
#
# Usage: scripts/k8s-binaries.sh
#
# The LAST line of stdout is the absolute directory holding the four binaries
# (by default <repo>/target/k8s/<K8S_VERSION>/bin); progress goes to stderr.
# So callers can do:  K8S_BIN=$(scripts/k8s-binaries.sh | tail -n1)
#
# How:
#  * kube-apiserver, kube-proxy, kubectl: `go build` of
#    k8s.io/kubernetes/cmd/... through the wrapper module scripts/k8s
#    (go.mod pins k8s.io/kubernetes and all its k8s.io/* staging modules; see
#    the comment there). Flags mirror upstream's hack/lib/golang.sh (static,
#    -trimpath, -s -w, tags selinux,notest,grpcnotrace) and the version is
#    stamped so that `kube-proxy --version` prints K8S_VERSION.
#  * etcd: RVS_ETCD_SOURCE=build (default) builds go.etcd.io/etcd/server/v3
#    through the wrapper module scripts/etcd. RVS_ETCD_SOURCE=debian instead
#    extracts /usr/bin/etcd from Debian's etcd-server .deb (apt-get download
#    + dpkg-deb -x: nothing is installed, so no etcd service gets started).
#    NOTE: Debian 12's etcd is 3.4.23. kube-apiserver v1.37 starts on it, but
#    marks RequestWatchProgress unsupported (needs etcd >= 3.4.31/3.5.13), so
#    streaming-list watches (sendInitialEvents=true, used by client-go's
#    WatchList) fail with HTTP 500 and consistent reads from the watch cache
#    are off: unlike a real cluster, hence the default.
#
# Caching: a stamp file per component records what was built (pinned version
# + hash of the wrapper module's go.mod/go.sum + build recipe). When the
# binaries exist and the stamps match, nothing is done. Go's module cache and
# build cache (go env GOMODCACHE / GOCACHE) are reused across clones, so even
# a rebuild after `cargo clean` / a fresh clone is mostly link time.
#
# Environment:
#   RVS_K8S_CACHE_DIR  root of the output tree (default <repo>/target/k8s)
#   RVS_ETCD_SOURCE    build | debian                      (default build)
#
# Requirements: Go >= 1.26 (older Go >= 1.21 auto-fetches the toolchain named
# in go.mod from the Go module proxy), sha256sum; for RVS_ETCD_SOURCE=debian
# also apt-get and dpkg-deb.
set -euo pipefail

# --- pinned versions --------------------------------------------------------
# Must match scripts/k8s/go.mod (k8s.io/kubernetes) and scripts/etcd/go.mod.
readonly K8S_VERSION="v1.37.2"
readonly ETCD_VERSION="v3.6.17"
# Bump when the build flags below change, to invalidate existing stamps.
readonly RECIPE="1"

log() { printf '[k8s-binaries] %s\n' "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

# --- locations --------------------------------------------------------------
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCRIPT_DIR}/.." && pwd)"
readonly SCRIPT_DIR REPO_ROOT
readonly K8S_MOD_DIR="${SCRIPT_DIR}/k8s"
readonly ETCD_MOD_DIR="${SCRIPT_DIR}/etcd"
CACHE_DIR="${RVS_K8S_CACHE_DIR:-${REPO_ROOT}/target/k8s}"
readonly CACHE_DIR
readonly BIN_DIR="${CACHE_DIR}/${K8S_VERSION}/bin"
readonly K8S_STAMP="${BIN_DIR}/.k8s.stamp"
readonly ETCD_STAMP="${BIN_DIR}/.etcd.stamp"
readonly ETCD_SOURCE="${RVS_ETCD_SOURCE:-build}"
readonly K8S_CMDS=(kube-apiserver kube-proxy kubectl)

case "${ETCD_SOURCE}" in
build | debian) ;;
*) die "RVS_ETCD_SOURCE must be 'build' or 'debian', got '${ETCD_SOURCE}'" ;;
esac

# --- helpers ----------------------------------------------------------------

# hash_files FILE... : one sha256 over the given files' contents.
hash_files() {
	cat "$@" | sha256sum | cut -d' ' -f1
}

# stamp_ok STAMP EXPECTED BIN... : true when STAMP holds EXPECTED and every
# BIN exists (executable) in BIN_DIR.
stamp_ok() {
	local stamp="$1" expected="$2" b
	shift 2
	[[ -f "${stamp}" && "$(cat "${stamp}")" == "${expected}" ]] || return 1
	for b in "$@"; do
		[[ -x "${BIN_DIR}/${b}" ]] || return 1
	done
}

# gobuild MODDIR OUTDIR [go build args...] : `go build` inside a wrapper
# module, with a controlled environment: no workspace, module graph taken
# read-only from the committed go.mod/go.sum (fails loudly if they are
# inconsistent instead of silently editing them), static binaries.
gobuild() {
	local moddir="$1" outdir="$2"
	shift 2
	(
		cd "${moddir}"
		GOWORK=off GOFLAGS=-mod=readonly CGO_ENABLED=0 \
			go build -trimpath -o "${outdir}/" "$@"
	)
}

# check_pin MODDIR MODULE VERSION : the wrapper go.mod must pin MODULE@VERSION.
check_pin() {
	local got
	got="$(cd "$1" && GOWORK=off GOFLAGS=-mod=readonly go list -m -f '{{.Version}}' "$2")" ||
		die "cannot read the version of $2 from $1/go.mod"
	[[ "${got}" == "$3" ]] ||
		die "$1/go.mod pins $2 ${got}, but this script expects $3; update one of them"
}

# need_go: only building needs Go; a fully cached run does not.
need_go() {
	command -v go >/dev/null 2>&1 ||
		die "'go' not found in PATH, and it is needed to build the binaries. Install Go >= 1.26 (https://go.dev/doc/install) and retry."
}

# --- preconditions ----------------------------------------------------------
command -v sha256sum >/dev/null 2>&1 || die "'sha256sum' not found (coreutils)"

mkdir -p "${BIN_DIR}"

# Serialise concurrent runs (e.g. parallel test jobs) on one cache directory.
if command -v flock >/dev/null 2>&1; then
	exec 9>"${CACHE_DIR}/.lock"
	flock 9
fi

# --- kube-apiserver, kube-proxy, kubectl -------------------------------------
k8s_key="k8s=${K8S_VERSION} mod=$(hash_files "${K8S_MOD_DIR}/go.mod" "${K8S_MOD_DIR}/go.sum") recipe=${RECIPE}"
if stamp_ok "${K8S_STAMP}" "${k8s_key}" "${K8S_CMDS[@]}"; then
	log "kubernetes ${K8S_VERSION}: cached (${BIN_DIR})"
else
	need_go
	log "kubernetes ${K8S_VERSION}: building ${K8S_CMDS[*]} with $(go version) (a cold build takes ~5 min on 2 cores)"
	check_pin "${K8S_MOD_DIR}" k8s.io/kubernetes "${K8S_VERSION}"
	# Version stamping, as hack/lib/version.sh does. buildDate is the
	# module's publication time (from the proxy's .info) so builds are
	# reproducible; there is no git commit to record for a module build.
	build_date="$(cd "${K8S_MOD_DIR}" && GOWORK=off GOFLAGS=-mod=readonly \
		go list -m -f '{{if .Time}}{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' k8s.io/kubernetes)"
	build_date="${build_date:-1970-01-01T00:00:00Z}"
	major="${K8S_VERSION#v}"
	major="${major%%.*}"
	minor="${K8S_VERSION#v*.}"
	minor="${minor%%.*}"
	ldflags="-s -w"
	for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
		ldflags+=" -X ${pkg}.gitVersion=${K8S_VERSION}"
		ldflags+=" -X ${pkg}.gitMajor=${major} -X ${pkg}.gitMinor=${minor}"
		ldflags+=" -X ${pkg}.gitCommit= -X ${pkg}.gitTreeState=clean"
		ldflags+=" -X ${pkg}.buildDate=${build_date}"
	done
	# Build into a scratch dir and move into place, so an interrupted build
	# never leaves a half-written binary that looks usable.
	tmp="$(mktemp -d "${BIN_DIR}/.build.XXXXXX")"
	trap 'rm -rf "${tmp}"' EXIT
	start=${SECONDS}
	pkgs=()
	for c in "${K8S_CMDS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/${c}"); done
	gobuild "${K8S_MOD_DIR}" "${tmp}" -tags=selinux,notest,grpcnotrace \
		-ldflags="${ldflags}" "${pkgs[@]}" ||
		die "go build of kubernetes ${K8S_VERSION} failed (see above)"
	for c in "${K8S_CMDS[@]}"; do mv -f "${tmp}/${c}" "${BIN_DIR}/${c}"; done
	rm -rf "${tmp}"
	trap - EXIT
	printf '%s\n' "${k8s_key}" >"${K8S_STAMP}"
	log "kubernetes ${K8S_VERSION}: built in $((SECONDS - start))s"
fi

# --- etcd -------------------------------------------------------------------
if [[ "${ETCD_SOURCE}" == build ]]; then
	etcd_key="etcd=build:${ETCD_VERSION} mod=$(hash_files "${ETCD_MOD_DIR}/go.mod" "${ETCD_MOD_DIR}/go.sum" "${ETCD_MOD_DIR}/main.go") recipe=${RECIPE}"
else
	etcd_key="etcd=debian:etcd-server recipe=${RECIPE}"
fi
if stamp_ok "${ETCD_STAMP}" "${etcd_key}" etcd; then
	log "etcd (${ETCD_SOURCE}): cached"
elif [[ "${ETCD_SOURCE}" == build ]]; then
	need_go
	log "etcd ${ETCD_VERSION}: building from go.etcd.io/etcd/server/v3"
	check_pin "${ETCD_MOD_DIR}" go.etcd.io/etcd/server/v3 "${ETCD_VERSION}"
	tmp="$(mktemp -d "${BIN_DIR}/.build.XXXXXX")"
	trap 'rm -rf "${tmp}"' EXIT
	start=${SECONDS}
	gobuild "${ETCD_MOD_DIR}" "${tmp}" -ldflags="-s -w" . ||
		die "go build of etcd ${ETCD_VERSION} failed (see above)"
	# The wrapper package builds as "etcd" (the module's last path element).
	mv -f "${tmp}/etcd" "${BIN_DIR}/etcd"
	rm -rf "${tmp}"
	trap - EXIT
	printf '%s\n' "${etcd_key}" >"${ETCD_STAMP}"
	log "etcd ${ETCD_VERSION}: built in $((SECONDS - start))s"
else
	# Debian's package, unpacked rather than installed: installing it would
	# also register (and on systemd/sysv hosts start) an etcd service.
	command -v apt-get >/dev/null 2>&1 || die "RVS_ETCD_SOURCE=debian needs apt-get"
	command -v dpkg-deb >/dev/null 2>&1 || die "RVS_ETCD_SOURCE=debian needs dpkg-deb"
	tmp="$(mktemp -d "${BIN_DIR}/.build.XXXXXX")"
	trap 'rm -rf "${tmp}"' EXIT
	chmod 755 "${tmp}" # lets apt's unprivileged _apt user write there
	if ! (cd "${tmp}" && apt-get download etcd-server >&2); then
		[[ "$(id -u)" == 0 ]] || die "apt-get download etcd-server failed; run 'apt-get update' as root first"
		log "refreshing apt package lists"
		apt-get update >&2
		(cd "${tmp}" && apt-get download etcd-server >&2) || die "apt-get download etcd-server failed"
	fi
	dpkg-deb -x "${tmp}"/etcd-server_*.deb "${tmp}/root"
	mv -f "${tmp}/root/usr/bin/etcd" "${BIN_DIR}/etcd"
	rm -rf "${tmp}"
	trap - EXIT
	printf '%s\n' "${etcd_key}" >"${ETCD_STAMP}"
	log "etcd (debian): $("${BIN_DIR}/etcd" --version 2>/dev/null | head -n1)"
fi

printf '%s\n' "${BIN_DIR}"
