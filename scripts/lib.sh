# Shared helpers for Halyard's scripts. Source it; do not run it.

# ensure_packages PKG... — installs the Debian packages that are missing (needs root or sudo).
ensure_packages() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo ">> installing missing packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Routing daemons start a system service on install; Halyard runs its own instances inside
    # network namespaces, so a system instance would only hold port 179 in the root namespace.
    for p in "${missing[@]}"; do
        case "$p" in
            bird2) svc=bird ;; frr) svc=frr ;; gobgpd) svc=gobgpd ;; exabgp) svc=exabgp ;; etcd-server) svc=etcd ;;
            *) continue ;;
        esac
        if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
            $sudo systemctl disable --now "$svc" >/dev/null 2>&1 || true
        fi
    done
}

# ensure_rust — Halyard builds with the Rust 1.95 stable toolchain (rustup).
ensure_rust() {
    if ! command -v cargo >/dev/null 2>&1; then
        echo "error: cargo not found. Install Rust 1.95 with rustup (https://rustup.rs), then re-run." >&2
        exit 1
    fi
}

# The packages every build needs: protoc for the gRPC API, a C toolchain for build scripts,
# clang-19 and libbpf's headers for the eBPF programs (datapath-bpf/build.rs).
BUILD_PACKAGES=(protobuf-compiler build-essential pkg-config iproute2 curl clang-19 libbpf-dev)

# Real peers and tools the integration tests run inside network namespaces.
TEST_PACKAGES=(bird2 frr gobgpd exabgp iputils-ping iputils-arping ndisc6 etcd-server etcd-client tcpdump bpftool ethtool openssl)
