#!/usr/bin/env bash
# The whole rvs test suite: installs what it needs, then lint + tests.
#
# Installs missing Debian packages (qemu, busybox-static, ipvsadm, iptables,
# ipset, nftables, iproute2, kmod, cpio, conntrack; clang, libbpf-dev and
# bpftool for the eBPF dataplane's programs) when run as root; the
# guest kernel for the VM tests is fetched with `apt-get download` by the
# test rig itself and cached under target/rvs-rig, so a second run
# downloads nothing. Set RVS_REQUIRE_PRIVILEGED=1 to turn skipped
# root/netns/VM tests into failures (CI does).
#
# --quick: the inner loop. fmt, clippy, unit tests and the integration
# test files of the pure and _loopback tiers only (see docs/testing.md);
# no _root, _netns or _vm tests and no doc build.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=false
case "${1:-}" in
    --quick) quick=true ;;
    "") ;;
    *) echo "usage: $0 [--quick]" >&2; exit 2 ;;
esac

# command -> Debian package providing it
deps=(
    "qemu-system-x86_64:qemu-system-x86"
    "busybox:busybox-static"
    "ipvsadm:ipvsadm"
    "iptables-legacy:iptables"
    "ipset:ipset"
    "nft:nftables"
    "ip:iproute2"
    "depmod:kmod"
    "cpio:cpio"
    "conntrack:conntrack"
    "openssl:openssl"
    "clang:clang"
    "bpftool:bpftool"
)
missing=()
for dep in "${deps[@]}"; do
    cmd=${dep%%:*} pkg=${dep#*:}
    PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" > /dev/null || missing+=("$pkg")
done
# rvs-ebpf's programs include libbpf's headers (bpf_helpers.h).
[ -e /usr/include/bpf/bpf_helpers.h ] || missing+=(libbpf-dev)
[ -e /usr/include/linux/bpf.h ] || missing+=(linux-libc-dev)
# The rebalancing tests' keep-alive HTTP clients are urllib3's.
python3 -c 'import urllib3' > /dev/null 2>&1 || missing+=(python3-urllib3)
# ... and their HTTP/2 clients and servers are hyper-h2's (gRPC-style).
python3 -c 'import h2' > /dev/null 2>&1 || missing+=(python3-h2)
# rvs-benchplot draws its figures' text with this face.
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
# The static busybox is needed (the initramfs has no libc of its own).
if command -v busybox > /dev/null && ldd "$(command -v busybox)" > /dev/null 2>&1; then
    missing+=(busybox-static)
fi

if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    if [ ${#missing[@]} -gt 0 ] || ! apt-cache show linux-image-cloud-amd64 > /dev/null 2>&1; then
        echo "test.sh: installing ${missing[*]:-nothing} (and refreshing package lists)" >&2
        apt-get update -qq
        [ ${#missing[@]} -eq 0 ] || apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
    fi
elif [ ${#missing[@]} -gt 0 ]; then
    echo "test.sh: not root, cannot install ${missing[*]}; tests that need them will skip" >&2
fi

# The real Kubernetes control plane (kube-apiserver, etcd, kube-proxy,
# kubectl) the control-plane tests run against, built once from the Go
# module proxy and cached under target/k8s (Go's own caches are shared
# across clones). Without Go those tests skip (fail under
# RVS_REQUIRE_PRIVILEGED=1).
if $quick; then
    : # the control-plane tests find (or build) the binaries themselves
elif command -v go > /dev/null; then
    echo "test.sh: Kubernetes binaries (scripts/k8s-binaries.sh)" >&2
    K8S_BIN=$(./scripts/k8s-binaries.sh | tail -n1)
    export K8S_BIN
else
    echo "test.sh: no Go toolchain: tests against a real kube-apiserver and kube-proxy will skip" >&2
fi

echo "test.sh: cargo fmt --check" >&2
cargo fmt --all -- --check
echo "test.sh: cargo clippy -D warnings" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
if $quick; then
    # Test files are named by tier: FILE_vm.rs, FILE_netns.rs and
    # FILE_root.rs need the VM or root; the rest are pure or _loopback.
    tests=()
    for file in crates/*/tests/*.rs; do
        name=$(basename "$file" .rs)
        case "$name" in
            *_vm | *_netns | *_root) ;;
            *) tests+=(--test "$name") ;;
        esac
    done
    echo "test.sh: cargo test, quick: unit tests and the pure and _loopback tiers (not _root, _netns, _vm)" >&2
    cargo test --workspace --locked --lib --bins "${tests[@]}"
else
    echo "test.sh: cargo doc -D warnings" >&2
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
    echo "test.sh: cargo test, every tier: pure, _loopback, _root, _netns, _vm" >&2
    cargo test --workspace --locked
fi
