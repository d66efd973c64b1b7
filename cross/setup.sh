#!/usr/bin/env bash
# Installs mote's ARM cross toolchain on a Debian 12 (bookworm) x86_64 machine, as root, from
# Debian's own packages only (no rustup targets, no docker, nothing downloaded from elsewhere):
#
#   - rustc-web / cargo-web / libstd-rust-web-dev / rust-web-src, pinned at $MOTE_RUST_VER (1.85)
#   - the aarch64 and armv7 standard libraries, unpacked from Debian's arm64 / armhf
#     libstd-rust-web-dev into /usr/lib/rustlib/<target>
#   - gcc-aarch64-linux-gnu, gcc-arm-linux-gnueabihf (linkers + ARM glibc) and qemu-user-static
#   - musl sysroots for static aarch64 / armv7 binaries (musl-dev + LLVM libunwind, unpacked),
#     and for static x86_64 ones (the host's musl-tools, musl-dev and libunwind-14-dev)
#   - binfmt_misc handlers for qemu-aarch64 / qemu-arm, so that an ARM program a test spawns
#     runs under qemu too
#
# Idempotent: re-running skips what is in place (no apt-get update when nothing is missing).
#   cross/setup.sh            # everything
#   MUSL=0 cross/setup.sh     # skip the musl sysroots
#
# Why a private apt state for the ARM packages: `dpkg --add-architecture armhf` on the host
# makes every later `apt-get update` fail whenever the bookworm-security armhf index is out of
# sync with amd64, so the host's dpkg architectures are left alone and the few ARM .debs are
# fetched with `apt-get download` against an index of bookworm main for arm64/armhf only.
# Why pinned: an unpinned `apt-get install rustc-web` takes bookworm-security's newer version,
# whose ARM std this mirror cannot always serve; the std must match rustc exactly.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
MUSL=${MUSL:-1}
export DEBIAN_FRONTEND=noninteractive
[ "$(id -u)" = 0 ] || { echo "cross/setup.sh: run as root (it installs Debian packages)" >&2; exit 1; }
VER=$MOTE_RUST_VER

# ------------------------------------------------------------------ 1. host packages
pkgs=(rustc-web="$VER" cargo-web="$VER" libstd-rust-web-dev="$VER" libstd-rust-web-1.85="$VER"
      gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross libc6-dev-armhf-cross
      qemu-user-static ca-certificates file binutils lld-14)
[ "$MUSL" = 1 ] && pkgs+=(rust-web-src="$VER" musl-tools musl-dev libunwind-14-dev)
missing=()
for p in "${pkgs[@]}"; do
  n=${p%%=*}; want=${p#*=}; [ "$want" = "$p" ] && want=
  have=$(dpkg-query -W -f='${db:Status-Abbrev}${Version}' "$n" 2>/dev/null || true)
  case $have in
    "ii "*) [ -z "$want" ] || [ "${have#ii }" = "$want" ] || missing+=("$p") ;;
    *) missing+=("$p") ;;
  esac
done
if ((${#missing[@]})); then
  mote_step "apt: ${missing[*]}"
  # Tolerated: a host that already added armhf may get exit 100 from an out-of-sync
  # bookworm-security index; the indexes that matter here still update.
  apt-get update || echo "WARNING: apt-get update reported errors; continuing"
  apt-get install -y --no-install-recommends --no-upgrade --allow-downgrades "${missing[@]}"
else
  mote_step "apt packages: all in place (rustc-web $VER, cross gcc, qemu-user-static)"
fi
$RUSTC --version | grep -q "^rustc ${VER%%+*} " \
  || { echo "ERROR: $RUSTC is not ${VER%%+*} (an unpinned rustc-web from bookworm-security?)" >&2; exit 1; }
# LLVM's linker for every cross binary (see env.sh): gcc finds it as ld.lld in this
# directory, which env.sh passes with -B.
mkdir -p "$MOTE_CROSS_HOME/lld"
ln -sfn /usr/bin/ld.lld-14 "$MOTE_CROSS_HOME/lld/ld.lld"

# ------------------------------------------------------------------ 2. private apt state
MIRROR=${MIRROR:-$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null \
                   | grep -v security | head -1)}
MIRROR=${MIRROR:-$(awk '$1=="deb" && $0 !~ /security/ {for(i=2;i<=NF;i++) if($i ~ /^[a-z+]+:\/\//){print $i; exit}}' \
                   /etc/apt/sources.list 2>/dev/null)}
A=$MOTE_CROSS_HOME/apt
APTO=(-o Dir::Etc::SourceList="$A/sources.list" -o Dir::Etc::SourceParts=/nonexistent
      -o Dir::State::Lists="$A/lists" -o Dir::Cache="$A/cache"
      -o APT::Architectures::=arm64 -o APT::Architectures::=armhf -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
private_download() {  # pkg:arch[=version] ...  -> $A/debs (skips those already there)
  local need=() p n base arch
  for p in "$@"; do
    n=${p%%=*}; base=${n%%:*}; arch=${n##*:}
    ls "$A/debs/${base}_"*"_${arch}.deb" >/dev/null 2>&1 || need+=("$p")
  done
  ((${#need[@]})) || return 0
  [ -n "$MIRROR" ] || { echo "ERROR: no Debian mirror found in /etc/apt/sources*" >&2; exit 1; }
  mkdir -p "$A/lists/partial" "$A/cache/archives/partial" "$A/debs"
  echo "deb [arch=arm64,armhf] $MIRROR bookworm main" > "$A/sources.list"
  [ -e "$A/lists/.updated" ] || { apt-get "${APTO[@]}" update; touch "$A/lists/.updated"; }
  (cd "$A/debs" && apt-get "${APTO[@]}" download "${need[@]}")
}

# ------------------------------------------------------------------ 3. ARM std
for t in "${MOTE_GNU_TARGETS[@]}"; do
  a=${MOTE_DEBARCH[$t]}
  if [ "$(cat "/usr/lib/rustlib/$t/.debian-version" 2>/dev/null)" = "$VER" ]; then
    mote_step "std for $t: in place"; continue
  fi
  mote_step "std for $t from libstd-rust-web-dev:$a=$VER (private apt, unpacked)"
  private_download "libstd-rust-web-dev:$a=$VER"
  x=$A/x-$a; rm -rf "$x"
  dpkg -x "$A/debs/libstd-rust-web-dev_${VER//:/%3a}_$a.deb" "$x"
  rm -rf "/usr/lib/rustlib/$t"; cp -a "$x/usr/lib/rustlib/$t" /usr/lib/rustlib/; rm -rf "$x"
  echo "$VER" > "/usr/lib/rustlib/$t/.debian-version"
done

# ------------------------------------------------------------------ 4. musl sysroots
if [ "$MUSL" = 1 ]; then
  declare -A MD=([arm64]=aarch64-linux-musl [armhf]=arm-linux-musleabihf)
  declare -A GCC=([arm64]=aarch64-linux-gnu-gcc [armhf]=arm-linux-gnueabihf-gcc)
  for t in "${MOTE_MUSL_TARGETS[@]}"; do
    a=${MOTE_DEBARCH[$t]}; S=$MOTE_CROSS_HOME/musl-$a
    if [ -e "$S/.ok" ]; then mote_step "musl sysroot for $t: in place"; continue; fi
    mote_step "musl sysroot for $t (musl-dev:$a + libunwind-14-dev:$a, unpacked into $S)"
    private_download "musl-dev:$a" "libunwind-14-dev:$a"
    rm -rf "$S"; mkdir -p "$S/unw"
    dpkg -x "$(ls "$A"/debs/musl-dev_*_"$a".deb)" "$S"
    dpkg -x "$(ls "$A"/debs/libunwind-14-dev_*_"$a".deb)" "$S/llvm"
    sed -i "s#/usr/#$S/usr/#g" "$S/usr/lib/${MD[$a]}/musl-gcc.specs"
    printf '#!/bin/sh\nexec %s "$@" -specs %s\n' "${GCC[$a]}" "$S/usr/lib/${MD[$a]}/musl-gcc.specs" > "$S/cc"
    chmod +x "$S/cc"
    cp -L "$S/llvm/usr/lib/llvm-14/lib/libunwind.a" "$S/unw/"
    # Debian built libunwind with _FORTIFY_SOURCE; musl has no __fprintf_chk.
    printf '%s\n' '#include <stdarg.h>' '#include <stdio.h>' \
      'int __fprintf_chk(FILE *f, int fl, const char *fmt, ...) { (void)fl; va_list ap; va_start(ap, fmt); int r = vfprintf(f, fmt, ap); va_end(ap); return r; }' \
      > "$S/shim.c"
    "$S/cc" -O2 -c "$S/shim.c" -o "$S/unw/shim.o"
    "${GCC[$a]%gcc}ar" rs "$S/unw/libunwind.a" "$S/unw/shim.o"
    touch "$S/.ok"
  done
  # x86_64: the same with the host's own packages.
  t=$MOTE_HOST_MUSL; S=$MOTE_CROSS_HOME/musl-amd64
  if [ -e "$S/.ok" ]; then mote_step "musl sysroot for $t: in place"; else
    mote_step "musl sysroot for $t (the host's musl-dev + libunwind-14-dev, wrapped in $S)"
    rm -rf "$S"; mkdir -p "$S/unw"
    printf '#!/bin/sh\nexec x86_64-linux-gnu-gcc "$@" -specs /usr/lib/x86_64-linux-musl/musl-gcc.specs\n' > "$S/cc"
    chmod +x "$S/cc"
    cp -L /usr/lib/llvm-14/lib/libunwind.a "$S/unw/"
    printf '%s\n' '#include <stdarg.h>' '#include <stdio.h>' \
      'int __fprintf_chk(FILE *f, int fl, const char *fmt, ...) { (void)fl; va_list ap; va_start(ap, fmt); int r = vfprintf(f, fmt, ap); va_end(ap); return r; }' \
      > "$S/shim.c"
    "$S/cc" -O2 -c "$S/shim.c" -o "$S/unw/shim.o"
    ar rs "$S/unw/libunwind.a" "$S/unw/shim.o"
    touch "$S/.ok"
  fi
fi

# ------------------------------------------------------------------ 5. binfmt_misc
# Tests spawn the `mote` binary; for an ARM build that binary must run through qemu without
# the cargo runner's help. qemu-user-static's postinst registers its handlers only through
# systemd-binfmt / binfmt-support, which may not run here, so register them directly from the
# package's own /usr/lib/binfmt.d entries (flag F: qemu is opened now, so it works later even
# inside another mount namespace).
binfmt=/proc/sys/fs/binfmt_misc
if [ ! -e "$binfmt/register" ]; then
  mount -t binfmt_misc binfmt_misc "$binfmt" 2>/dev/null || true
fi
if [ -w "$binfmt/register" ]; then
  for q in qemu-aarch64 qemu-arm; do
    if [ -e "$binfmt/$q" ]; then mote_step "binfmt $q: registered"; continue; fi
    conf=/usr/lib/binfmt.d/$q.conf
    [ -r "$conf" ] || { echo "WARNING: $conf missing; ARM programs spawned by tests will not run" >&2; continue; }
    mote_step "binfmt $q: registering from $conf"
    grep -v '^#' "$conf" | head -1 > "$binfmt/register" \
      || echo "WARNING: could not register $q with binfmt_misc" >&2
  done
else
  echo "WARNING: binfmt_misc is not available: tests that spawn the mote binary cannot run" \
       "for ARM here (cross/test.sh says which)" >&2
fi

mote_step "toolchain"
$RUSTC --version; $CARGO --version
ls -d /usr/lib/rustlib/*/lib | sed 's#/usr/lib/rustlib/\(.*\)/lib#  std: \1#'
echo "cross/setup.sh: OK"
