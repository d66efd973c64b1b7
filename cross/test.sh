#!/usr/bin/env bash
# Runs mote's tests for ARM under qemu-user, with Debian's rustc 1.85 (cross/setup.sh first).
#
#   cross/test.sh                 # CI's set: aarch64 and armv7 below
#   cross/test.sh aarch64         # the broker's and the SDK's unit tests, and the end-to-end
#                                 # suites that run the ARM broker over real sockets: protocol,
#                                 # security, groups, HTTP, durable topics (crash loops run once,
#                                 # and tmpfs mounts skip, under qemu)
#   cross/test.sh armv7           # 32-bit: the broker's and the SDK's unit tests (engine,
#                                 # store, protocol)
#   cross/test.sh aarch64-full    # the whole workspace (also: armv7-full aarch64-musl armv7-musl)
#   cross/test.sh musl            # both static musl targets (std rebuilt with -Zbuild-std)
#   cross/test.sh all             # everything above
#
# The native run (.ci/run) has every suite; under qemu the suites that only time the host
# (CLI timing, HTTP limits, allocation counts, benchmarks, decoder properties) add minutes
# to CI and nothing an ARM CPU could change.
#
# Test binaries run through the cargo runner (qemu-*-static). Tests that spawn the `mote`
# binary (env!("CARGO_BIN_EXE_mote")) run it through the kernel's binfmt_misc handlers, which
# cross/setup.sh registers; QEMU_LD_PREFIX points qemu at the ARM glibc for those.
# Doctests are skipped for a foreign target by cargo 1.85 (they run natively in the main CI).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$MOTE_ROOT"

for q in qemu-aarch64 qemu-arm; do
  if ! grep -qx enabled "/proc/sys/fs/binfmt_misc/$q" 2>/dev/null; then
    echo "cross/test.sh: binfmt_misc handler $q is not registered (run cross/setup.sh as root);" \
         "tests that spawn the mote binary will fail with 'Exec format error'" >&2
  fi
done

run() {  # target cargo-test-args...
  local t=$1; shift
  mote_step "$t: cargo test $*"
  local extra=()
  case $t in *musl*) extra=(-Zbuild-std); export RUSTC_BOOTSTRAP=1 ;; esac
  QEMU_LD_PREFIX=$(mote_qemu_prefix "$t") $CARGO test --locked --target "$t" "${extra[@]}" "$@"
  unset RUSTC_BOOTSTRAP
}

# The end-to-end suites of the aarch64 set (those that exist).
ARM_SUITES=()
for t in e2e security groups http durable secure_vectors; do
  if [ -f "tests/$t.rs" ] || [ -f "sdk/tests/$t.rs" ]; then ARM_SUITES+=(--test "$t"); fi
done

what=("$@"); ((${#what[@]})) || what=(aarch64 armv7)
for w in "${what[@]}"; do
  case $w in
    aarch64)      run aarch64-unknown-linux-gnu -p mote-sdk -p mote-core -p mote-cli -p mote \
                    --lib --bins "${ARM_SUITES[@]}" ;;
    aarch64-full) run aarch64-unknown-linux-gnu --workspace ;;
    armv7)        run armv7-unknown-linux-gnueabihf -p mote-sdk -p mote-core -p mote-cli --lib ;;
    armv7-full)   run armv7-unknown-linux-gnueabihf --workspace ;;
    aarch64-musl) run aarch64-unknown-linux-musl --workspace ;;
    armv7-musl)   run armv7-unknown-linux-musleabihf --workspace ;;
    musl)         run aarch64-unknown-linux-musl --workspace
                  run armv7-unknown-linux-musleabihf --workspace ;;
    all)          "$0" aarch64-full armv7-full musl ;;
    *) echo "cross/test.sh: unknown target set '$w' (aarch64 aarch64-full armv7 armv7-full aarch64-musl armv7-musl musl all)" >&2
       exit 2 ;;
  esac
done
echo "cross/test.sh: OK (${what[*]})"
