# shellcheck shell=bash
# Sourced by cross/build.sh, cross/test.sh and .ci/*.sh: the pinned Debian toolchain and the
# per-target linkers / qemu runners that cross/setup.sh installed. Not meant to be run.

# Debian's rustc-web / cargo-web, pinned (cross/setup.sh installs exactly this version; the
# ARM standard libraries must match it byte for byte).
MOTE_RUST_VER=${MOTE_RUST_VER:-1.85.0+dfsg3-1~deb12u3}
# Where setup.sh keeps its private apt state and the musl sysroots.
MOTE_CROSS_HOME=${MOTE_CROSS_HOME:-/opt/mote-cross}

MOTE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# glibc targets (Raspberry Pi OS 64-bit / 32-bit, Pi 2 and later) and static musl ones.
MOTE_GNU_TARGETS=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
MOTE_MUSL_TARGETS=(aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf)
# The static build for x86_64 machines (the smallest memory footprint; same route as ARM).
MOTE_HOST_MUSL=x86_64-unknown-linux-musl
declare -A MOTE_DEBARCH=(
  [x86_64-unknown-linux-gnu]=amd64 [x86_64-unknown-linux-musl]=amd64
  [aarch64-unknown-linux-gnu]=arm64 [armv7-unknown-linux-gnueabihf]=armhf
  [aarch64-unknown-linux-musl]=arm64 [armv7-unknown-linux-musleabihf]=armhf)
declare -A MOTE_QEMU=([arm64]=qemu-aarch64-static [armhf]=qemu-arm-static)
declare -A MOTE_GNU_SYSROOT=([arm64]=/usr/aarch64-linux-gnu [armhf]=/usr/arm-linux-gnueabihf)

# Debian's cargo + rustc + rustdoc, all 1.85. rustup's ~/.cargo/bin usually comes first in
# PATH and its rustc/rustdoc are another version, so name them explicitly.
CARGO=/usr/bin/cargo
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$MOTE_ROOT/target}
# Finished binaries and packages: $MOTE_DIST/<target>/mote, $MOTE_DIST/debian/*.deb
MOTE_DIST=${MOTE_DIST:-$CARGO_TARGET_DIR/cross}
# MSRV-aware resolution (the workspace also says resolver = "3").
export CARGO_RESOLVER_INCOMPATIBLE_RUST_VERSIONS=fallback
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

# Every cross binary is linked by LLVM's lld (Debian's lld-14, which gcc finds through -B),
# not GNU ld: ld 2.40 pads the file so that the read-only-after-relocation part (RELRO) ends
# on a 64 KiB page, which cost the static aarch64 binary 61,720 bytes of zeros (the glibc one
# 11,900); lld gives RELRO a segment of its own, unpadded. The binaries still load on 4, 16
# and 64 KiB page kernels, keep RELRO, and their constants are no longer executable.
MOTE_LLD="-C link-arg=-B$MOTE_CROSS_HOME/lld -C link-arg=-fuse-ld=lld"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="$MOTE_LLD"
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUSTFLAGS="$MOTE_LLD"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64-static -L /usr/aarch64-linux-gnu"
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER=arm-linux-gnueabihf-gcc
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUNNER="qemu-arm-static -L /usr/arm-linux-gnueabihf"

# Static musl: std rebuilt with -Zbuild-std from Debian's rust-web-src, linked by the gnu
# (cross) gcc with musl's specs file and LLVM's libunwind (see setup.sh).
# (--no-dynamic-linker: musl's specs file names its loader, which lld would otherwise keep in
# a static binary.)
_lld="$MOTE_LLD -C link-arg=-Wl,--no-dynamic-linker"
for _t in "${MOTE_MUSL_TARGETS[@]}" "$MOTE_HOST_MUSL"; do
  _a=${MOTE_DEBARCH[$_t]}; _s=$MOTE_CROSS_HOME/musl-$_a; _u=$(echo "$_t" | tr 'a-z-' 'A-Z_')
  export "CARGO_TARGET_${_u}_LINKER=$_s/cc"
  # x86_64 runs natively: no runner.
  [ -z "${MOTE_QEMU[$_a]:-}" ] || export "CARGO_TARGET_${_u}_RUNNER=${MOTE_QEMU[$_a]}"
  export "CARGO_TARGET_${_u}_RUSTFLAGS=-C link-self-contained=no -C relocation-model=static -L $_s/unw $_lld"
done
unset _t _a _s _u _lld

# QEMU_LD_PREFIX tells qemu-user where the foreign dynamic loader and libc live. The cargo
# runner passes -L itself; this is for ARM programs that a test *spawns* (the `mote` binary),
# which the kernel hands to qemu through binfmt_misc without any -L.
mote_qemu_prefix() {  # target -> the QEMU_LD_PREFIX for it (empty for static musl)
  case $1 in
    *-gnu|*-gnueabihf) echo "${MOTE_GNU_SYSROOT[${MOTE_DEBARCH[$1]}]}" ;;
    *) echo "" ;;
  esac
}

mote_step() { printf '\n=== %s\n' "$*"; }
