#!/usr/bin/env bash
# Builds stripped release binaries of mote for Raspberry Pi class boards with Debian's rustc
# 1.85 (run cross/setup.sh first), checks each one runs under qemu, prints sizes against the
# budgets (2 MiB per ARM binary: the static ones the .debs and the docker image ship, and the
# glibc ones), and packs the ARM .debs.
#
#   cross/build.sh              # gnu + static musl binaries, ARM .debs (if cargo-deb is there)
#   MUSL=0 cross/build.sh       # gnu only
#   DEB=0 cross/build.sh        # no .debs
#   TARGETS="aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf" DEB=0 cross/build.sh
#                               # just these (CI's size check)
#
# Output ($MOTE_DIST, by default target/cross/):
#   target/cross/aarch64-unknown-linux-gnu/mote        Pi 3/4/5, 64-bit Raspberry Pi OS (glibc)
#   target/cross/armv7-unknown-linux-gnueabihf/mote    Pi 2/3/4/5, 32-bit Raspberry Pi OS (glibc)
#   target/cross/aarch64-unknown-linux-musl/mote       the same, static: any 64-bit ARM Linux
#   target/cross/armv7-unknown-linux-musleabihf/mote   the same, static: any ARMv7 hard-float Linux
#   target/cross/x86_64-unknown-linux-gnu/mote         host build, for the size table
#   target/cross/x86_64-unknown-linux-musl/mote        static x86_64 (any distribution; the
#                                                      smallest idle memory, see the README)
#   target/cross/debian/mote_<version>-1_{arm64,armhf}.deb
#   target/cross/sizes.txt
# The .debs carry the static musl binaries when MUSL=1 (they then run on any Raspberry Pi OS
# or Debian release, old or new), else the glibc ones (glibc >= the version they were linked
# against, Debian 12 / Raspberry Pi OS bookworm).
#
# The release profile (lto, codegen-units 1, panic=abort, strip, opt-level per crate) comes from
# Cargo.toml; nothing here overrides it. env.sh links every cross binary with lld.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$MOTE_ROOT"
MUSL=${MUSL:-1}
DEB=${DEB:-1}
BUDGET=${BUDGET:-$((2048 * 1024))}                    # bytes, per static (musl) ARM binary (2 MiB)
GLIBC_BUDGET=${GLIBC_BUDGET:-$((2048 * 1024))}        # bytes, per glibc ARM binary (2 MiB)
mkdir -p "$MOTE_DIST"
$RUSTC --version; $CARGO --version

if [ -n "${TARGETS:-}" ]; then
  read -r -a targets <<< "$TARGETS"
else
  targets=(x86_64-unknown-linux-gnu "${MOTE_GNU_TARGETS[@]}")
  [ "$MUSL" = 1 ] && targets+=("${MOTE_MUSL_TARGETS[@]}" "$MOTE_HOST_MUSL")
fi

for t in "${targets[@]}"; do
  mote_step "$t: release build"
  # std rebuilt (Debian's rust-web-src) without its `backtrace` feature, for every target: a
  # panic still prints its message, without the symbolizer (gimli, addr2line, miniz, the
  # demangler): 196,680 bytes off aarch64 musl, 311,384 off armv7 glibc.
  # armv7 in Thumb-2 (std included), as Debian builds all of armhf: the same instructions
  # in 2 or 4 bytes instead of 4; see cross/README.md for the size and what it costs.
  case $t in
    armv7-*)
      u=CARGO_TARGET_$(echo "$t" | tr 'a-z-' 'A-Z_')_RUSTFLAGS
      export "$u=${!u:-} -C target-feature=+thumb-mode" ;;
  esac
  RUSTC_BOOTSTRAP=1 $CARGO build --locked --release -p mote --bin mote --target "$t" \
    -Zbuild-std=std,panic_abort -Zbuild-std-features=default
  mkdir -p "$MOTE_DIST/$t"
  cp "$CARGO_TARGET_DIR/$t/release/mote" "$MOTE_DIST/$t/mote"
  # Proof it runs on the target CPU (qemu-user; binfmt or not).
  a=${MOTE_DEBARCH[$t]}
  case $a in
    amd64) "$MOTE_DIST/$t/mote" --version ;;
    *) QEMU_LD_PREFIX=$(mote_qemu_prefix "$t") "${MOTE_QEMU[$a]}" "$MOTE_DIST/$t/mote" --version ;;
  esac
done

mote_step "sizes (stripped release; budgets per ARM binary: static $BUDGET bytes, glibc $GLIBC_BUDGET bytes)"
over=0
printf '%-34s %10s %8s  %s\n' target bytes MiB linkage > "$MOTE_DIST/sizes.txt"
for t in "${targets[@]}"; do
  f=$MOTE_DIST/$t/mote; s=$(stat -c %s "$f")
  link=$(file -b "$f" | grep -o 'statically linked\|static-pie linked\|dynamically linked' | head -1)
  stripped=$(file -b "$f" | grep -o 'not stripped\|stripped' | head -1)
  printf '%-34s %10d %8.2f  %s, %s\n' "$t" "$s" "$(awk -v s="$s" 'BEGIN{print s/1048576}')" \
    "$link" "$stripped" >> "$MOTE_DIST/sizes.txt"
  case $t in
    x86_64-*) budget= ;;
    *-musl*) budget=$BUDGET ;;
    *) budget=$GLIBC_BUDGET ;;
  esac
  if [ -n "$budget" ] && [ "$s" -gt "$budget" ]; then
    echo "OVER BUDGET: $t is $s bytes > $budget" >&2; over=1
  fi
done
cat "$MOTE_DIST/sizes.txt"
((over == 0)) || exit 1

if [ "$DEB" = 1 ]; then
  if ! cargo deb --version >/dev/null 2>&1; then
    echo "cross/build.sh: cargo-deb is not installed; no .debs (.ci/package.sh installs it)" >&2
  else
    # cargo-deb is a subcommand of the machine's (rustup) cargo; --no-build packs the binaries
    # built above. The static musl ones when there are (no Depends at all: cargo-deb warns
    # "No $auto deps", which is right), else the glibc ones (variant glibc: libc6 >= 2.34).
    declare -A DEBT=([arm64]=aarch64-unknown-linux-musl [armhf]=armv7-unknown-linux-musleabihf)
    variant=()
    if [ "$MUSL" != 1 ]; then
      DEBT=([arm64]=aarch64-unknown-linux-gnu [armhf]=armv7-unknown-linux-gnueabihf)
      variant=(--variant glibc)
    fi
    mkdir -p "$MOTE_DIST/debian"
    for a in arm64 armhf; do
      t=${DEBT[$a]}
      [ -x "$CARGO_TARGET_DIR/$t/release/mote" ] || { echo "no $t build: no $a .deb" >&2; continue; }
      mote_step "$a .deb from $t"
      deb=$(cargo deb -p mote --no-build --no-strip "${variant[@]}" --target "$t" \
              --output "$MOTE_DIST/debian/" | tail -1)
      # A static binary has no dependencies, but cargo-deb still writes an empty "Depends:"
      # line (even with depends = ""); drop it so the control file is clean.
      if dpkg-deb -f "$deb" Depends | grep -q .; then :; else
        x=$(mktemp -d)
        dpkg-deb -R "$deb" "$x"
        sed -i '/^Depends: *$/d' "$x/DEBIAN/control"
        dpkg-deb --root-owner-group -Zxz --build "$x" "$deb" >/dev/null
        rm -rf "$x"
      fi
      echo "$deb"
    done
    for d in "$MOTE_DIST"/debian/*.deb; do
      echo "--- $d"; dpkg-deb -f "$d" Package Version Architecture Depends Installed-Size
      dpkg-deb -c "$d" | awk '{print "   ", $1, $3, $6}'
    done
  fi
fi
echo "cross/build.sh: OK; binaries and packages are in $MOTE_DIST"
