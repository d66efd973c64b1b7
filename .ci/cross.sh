#!/usr/bin/env bash
# CI for ARM (fresh Debian 12 x86_64, root; about 10 minutes on 2 cores):
#   1. cross/setup.sh      Debian's rustc 1.85 + ARM std + cross gcc + qemu-user + binfmt
#   2. cross/test.sh       under qemu-user: aarch64, the unit tests and the end-to-end suites
#                          (protocol, security, groups, HTTP, durable topics); armv7 (32-bit),
#                          the unit tests of the broker and the SDK (engine, store, protocol)
#   3. cross/build.sh      release builds against the size budget (2 MiB per ARM binary):
#                          armv7 glibc, aarch64 static musl
#   4. docker/check.sh     compose file valid, Dockerfile linted (hadolint), the image's run
#                          stage imitated with the static aarch64 binary
# MOTE_CI_MUSL_TESTS=1 also runs the whole suite for both static musl targets (about +11 min:
# their std is rebuilt unoptimised for tests, and some tests then run several times slower).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECONDS=0
times=()
timed() {  # label, command...
  local label=$1 t0=$SECONDS; shift
  printf '\n##### %s\n' "$label"
  "$@"
  times+=("$(printf '%-44s %4ds' "$label" $((SECONDS - t0)))")
}

timed "setup (toolchain, std, qemu, binfmt)" cross/setup.sh
timed "test aarch64 (units, e2e) + armv7 (units)" cross/test.sh aarch64 armv7
if [ "${MOTE_CI_MUSL_TESTS:-0}" = 1 ]; then
  timed "test aarch64 + armv7 static musl" cross/test.sh musl
fi
timed "release builds + size budget" \
  env TARGETS="armv7-unknown-linux-gnueabihf aarch64-unknown-linux-musl" DEB=0 cross/build.sh
timed "docker checks" docker/check.sh

printf '\n##### .ci/cross.sh: OK\n'
printf '%s\n' "${times[@]}"
printf '%-44s %4ds\n' total "$SECONDS"
