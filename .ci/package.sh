#!/usr/bin/env bash
# CI: build mote's amd64 Debian package and check it on this machine (Debian 12, as root):
#   install -> the unit passes `systemd-analyze verify` -> `mote --version` -> the mote user
#   and the config's root:mote 0640 -> the shipped config and env files (as shipped and fully
#   uncommented, and the [tokens.NAME] example) work with `mote serve` run as the mote user
#   -> it tells systemd READY=1 (Type=notify) -> `dpkg -r` and `dpkg -P` leave nothing behind.
# The ARM packages come from cross/build.sh (cargo deb --target ... --no-build).
#
# systemd is not PID 1 here (no /run/systemd/system), so the package's postinst only enables
# the unit (deb-systemd-helper) without starting it, and the unit is checked offline:
# `systemd-analyze verify FILE` and `systemd-analyze security --offline=yes FILE` need no
# running systemd. Type=notify is checked by running the broker with NOTIFY_SOCKET pointing
# at a socket of ours.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
CARGO_DEB_VERSION=3.8.0      # builds with the machine's stable Rust (1.95 here)
export DEBIAN_FRONTEND=noninteractive
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${MOTE_DIST:-$CARGO_TARGET_DIR/cross}/debian
# cargo-deb builds with the machine's own cargo/rustc (rustup), not Debian's 1.85.
unset RUSTC RUSTDOC
step() { printf '\n=== %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

step "tools: dpkg-dev, systemd (systemd-analyze), python3, cargo-deb $CARGO_DEB_VERSION"
apt-get update || echo "WARNING: apt-get update reported errors; continuing"
apt-get install -y --no-install-recommends --no-upgrade dpkg-dev systemd init-system-helpers python3 file
if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
fi
cargo --version; cargo deb --version

step "build the amd64 package"
dpkg -s mote >/dev/null 2>&1 && dpkg -P mote   # a leftover from an earlier run
mkdir -p "$OUT"
cargo deb -p mote --locked --output "$OUT/"
deb=$(ls -t "$OUT"/mote_*_amd64.deb | head -1)
dpkg-deb -I "$deb"
dpkg-deb -c "$deb"
[ "$(dpkg-deb -f "$deb" Architecture)" = amd64 ] || fail "not an amd64 package"
dpkg-deb -I "$deb" conffiles | grep -qx /etc/mote/mote.toml || fail "mote.toml is not a conffile"
dpkg-deb -I "$deb" conffiles | grep -qx /etc/mote/mote.env || fail "mote.env is not a conffile"

# What the system looks like without mote, to compare with after the purge.
snap() {
  { find /etc /usr /var/lib /var/cache/mote /run/mote -xdev \
       \( -path /var/lib/dpkg -o -path /var/lib/apt -o -path /var/cache/apt \
          -o -path /var/lib/ucf -o -path /usr/lib/python3 -o -path /etc/ld.so.cache \) -prune \
       -o -print 2>/dev/null || true; } | sort
}
snap > /tmp/mote-before.txt

step "dpkg -i"
dpkg -i "$deb"
dpkg -s mote | grep -E '^(Status|Version|Depends):'
[ -x /usr/bin/mote ] || fail "/usr/bin/mote not installed"
unit=$(dpkg -L mote | grep '/systemd/system/mote.service$')
echo "unit: $unit"
[ "$(stat -c %a /etc/mote/mote.env)" = 600 ] || fail "/etc/mote/mote.env should be mode 600"
[ -L /etc/systemd/system/multi-user.target.wants/mote.service ] \
  || fail "the unit was not enabled by the postinst"
echo "enabled: $(readlink /etc/systemd/system/multi-user.target.wants/mote.service)"

step "mote --version"
/usr/bin/mote --version

step "systemd-analyze verify $unit"
systemd-analyze verify "$unit"
echo "verify: OK"
step "systemd-analyze security --offline=yes (exposure; lower is better)"
systemd-analyze security --offline=yes --no-pager "$unit" | tail -1

step "the mote user and the config file's permissions"
id mote
[ "$(stat -c '%U:%G %a' /etc/mote/mote.toml)" = "root:mote 640" ] \
  || fail "/etc/mote/mote.toml should be root:mote 0640, is $(stat -c '%U:%G %a' /etc/mote/mote.toml)"
echo "/etc/mote/mote.toml: root:mote 0640; /etc/mote/mote.env: $(stat -c '%U:%G %a' /etc/mote/mote.env)"

step "the shipped config and env files work with mote serve, run as the mote user"
/usr/bin/mote serve --help | grep -q -- '--config' \
  || fail "mote serve has no --config, but the unit runs 'mote serve --config /etc/mote/mote.toml'"
# As shipped (all commented), then with every plain setting uncommented (the [tokens.NAME]
# examples at the end are not plain settings; an empty example value like token = "" is a
# placeholder). Flags win over both, so --tcp 127.0.0.1:0 keeps the test off the real port.
tmp=$(mktemp -d); chmod 755 "$tmp"; trap 'rm -rf "$tmp"' EXIT
sed -n '/^#\[/q; /= ""$/d; s/^#\([a-z-]* = .*\)$/\1/p' /etc/mote/mote.toml > "$tmp/all.toml"
sed -n 's/^#\(MOTE_[A-Z_]*=.\+\)$/\1/p; s/^#\(RUST_LOG=.*\)$/\1/p' /etc/mote/mote.env > "$tmp/all.env"
for k in $(sed -n 's/^\([a-z-]*\) = .*/\1/p' "$tmp/all.toml"); do
  /usr/bin/mote serve --help | grep -q -- "--$k " || {
    grep -B2 "^#$k = " /etc/mote/mote.toml | grep -q '(coming)' \
      || fail "mote.toml offers '$k', which mote serve does not have and is not marked (coming)"
    echo "  $k: (coming), not in this mote yet"; sed -i "/^$k = /d" "$tmp/all.toml"
    sed -i "/^MOTE_$(echo "$k" | tr a-z- A-Z_)=/d" "$tmp/all.env"; }
done
for o in $(/usr/bin/mote serve --help | sed -n 's/^ *\(-., \)\?--\([a-z-]*\).*/\2/p'); do
  case $o in help|config) continue ;; esac
  # Commented out showing its default, or (data) set for the package.
  grep -qE "^#?$o = " /etc/mote/mote.toml || fail "mote serve --$o is missing from mote.toml"
done
echo "every option of mote serve is in mote.toml; uncommented:"; sed 's/^/  /' "$tmp/all.toml"
as_mote() { setpriv --reuid=mote --regid=mote --init-groups -- "$@"; }
# The HTTP edge (when this mote has one) also on a free port, off the real 7271.
HTTP=(); /usr/bin/mote serve --help | grep -q -- '--http ' && HTTP=(--http 127.0.0.1:0)
serve_start() {  # env-file or "", config, extra args...; sets pid, port
  local envf=$1 conf=$2; shift 2
  log=$tmp/serve.log
  ( set -a; [ -z "$envf" ] || . "$envf"; set +a
    exec setpriv --reuid=mote --regid=mote --init-groups -- \
      /usr/bin/mote serve --config "$conf" --tcp 127.0.0.1:0 "${HTTP[@]}" "$@" ) 2> "$log" &
  pid=$!
  for _ in $(seq 50); do grep -q "listening on" "$log" && break; sleep 0.1; done
  grep -q "listening on" "$log" || { cat "$log"; fail "mote serve ($conf) did not start"; }
  port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\) (tcp).*/\1/p' "$log" | head -1)
  [ -n "$port" ] || { cat "$log"; fail "no tcp port in the log"; }
}
serve_stop() {  # label
  kill -TERM "$pid"; wait "$pid" || { cat "$log"; fail "$1: mote serve did not stop cleanly"; }
  echo "$1: OK"
}
serve_start "" /etc/mote/mote.toml
as_mote /usr/bin/mote ping -p "$port" || fail "mote ping failed"
if grep -q '^data = "/var/lib/mote"' /etc/mote/mote.toml; then
  # The shipped config keeps its data in /var/lib/mote, which the mote user can write.
  as_mote /usr/bin/mote pub -p "$port" -t ci/package -m kept --confirm >/dev/null \
    || fail "a confirmed publish into /var/lib/mote failed"
  serve_stop "shipped /etc/mote/mote.toml (+ mote ping, a confirmed publish)"
  [ "$(stat -c %U /var/lib/mote/meta)" = mote ] || fail "/var/lib/mote/meta is not the mote user's"
  serve_start "" /etc/mote/mote.toml
  got=$(as_mote /usr/bin/mote sub -p "$port" -t ci/package --from earliest -C 1 -W 10) \
    || fail "the message published before the restart is not there after it"
  [ "$got" = kept ] || fail "after a restart: got '$got', expected 'kept'"
  serve_stop "shipped /etc/mote/mote.toml: /var/lib/mote written by the mote user, kept across a restart"
else
  serve_stop "shipped /etc/mote/mote.toml (+ mote ping)"
fi
serve_start "" "$tmp/all.toml"; serve_stop "every setting of mote.toml"
serve_start "$tmp/all.env" /etc/mote/mote.toml; serve_stop "every variable of mote.env"
printf 'no-such-key = 1\n' > "$tmp/bad.toml"
if /usr/bin/mote serve --config "$tmp/bad.toml" --tcp 127.0.0.1:0 "${HTTP[@]}" 2> "$tmp/bad.log"; then
  fail "an unknown key in the config file was accepted"
fi
grep -q no-such-key "$tmp/bad.log" || fail "the error for an unknown key does not name it"
echo "unknown key: refused ($(head -1 "$tmp/bad.log"))"
if /usr/bin/mote serve --help | grep -q -- '--token'; then
  # The [groups.NAME] example as it is and the [tokens.NAME] one with a real token: clients
  # need the token, and get in with it.
  tok=$(/usr/bin/mote token new)
  { cat /etc/mote/mote.toml
    sed -n '/^#\[groups\./,/^$/p' /etc/mote/mote.toml | sed 's/^#//; /^$/d'
    sed -n '/^#\[tokens.sensors\]/,/^#$/p' /etc/mote/mote.toml | sed 's/^#//; /^$/d' \
      | sed "s|^token = .*|token = \"$tok\"|"; } > "$tmp/tokens.toml"
  chmod 644 "$tmp/tokens.toml"
  serve_start "" "$tmp/tokens.toml"
  grep -q "1 token(s)" "$log" || { cat "$log"; fail "the [tokens.sensors] example was not loaded"; }
  as_mote /usr/bin/mote ping -q -p "$port" && fail "ping without the token was let in"
  as_mote /usr/bin/mote ping -p "$port" --token "sensors:$tok" || fail "ping with the token failed"
  kill -HUP "$pid"; sleep 0.5; kill -0 "$pid" || fail "SIGHUP (systemctl reload) stopped mote"
  serve_stop "[groups.*] and [tokens.sensors] examples, fresh token (refused without, in with it, reload)"
fi

step "Type=notify: mote serve sends READY=1 to \$NOTIFY_SOCKET"
python3 - "$tmp/notify" "${HTTP[@]}" <<'PY'
import os, socket, subprocess, sys
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
s.settimeout(10)
env = dict(os.environ, NOTIFY_SOCKET=path)
# Run as root here: its own data directory, so /var/lib/mote stays the mote user's.
p = subprocess.Popen(["/usr/bin/mote", "serve", "--config", "/etc/mote/mote.toml",
                      "--tcp", "127.0.0.1:0", "--data", path + ".data"] + sys.argv[2:],
                     env=env, stderr=subprocess.DEVNULL)
try:
    msg = s.recv(4096).decode()
    print("notify:", msg.replace("\n", " | "))
    assert "READY=1" in msg.split("\n"), msg
finally:
    p.terminate()
    rc = p.wait(10)
print("stopped with", rc)
# mote installs its signal handlers before it notifies: a SIGTERM right after READY=1 is
# a graceful stop (exit 0), never a kill.
sys.exit(0 if rc == 0 else 1)
PY

step "dpkg -r (binary and unit go, conffiles stay)"
dpkg -r mote
[ ! -e /usr/bin/mote ] || fail "/usr/bin/mote left after dpkg -r"
[ ! -e "$unit" ] || fail "$unit left after dpkg -r"
[ -e /etc/mote/mote.toml ] || fail "conffile removed by dpkg -r (only purge should)"
dpkg -s mote | grep '^Status:'

step "dpkg -P (everything goes)"
dpkg -P mote
! dpkg -s mote >/dev/null 2>&1 || fail "mote still known to dpkg after purge"
! getent passwd mote >/dev/null || fail "the mote user is left after purge"
! dpkg-statoverride --list /etc/mote/mote.toml >/dev/null || fail "the statoverride is left after purge"
snap > /tmp/mote-after.txt
if ! diff -u /tmp/mote-before.txt /tmp/mote-after.txt; then
  fail "files left behind (or removed) by install + purge: see the diff above"
fi
echo "nothing left behind"
echo ".ci/package.sh: OK ($deb)"
