#!/usr/bin/env bash
# Real-browser test of the web status page (web/): Debian's headless Chromium, driven by
# playwright-core from npm, against the real broker. Builds the broker (release) unless
# MOTE_BIN names one, installs Chromium if it is missing (as root) and playwright-core from
# package-lock.json, then runs test.mjs, which starts and stops the brokers itself.
# Screenshots go to tests/browser/screenshots/. Exit status: 0 only if every check passed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

if [ ! -x "$CHROMIUM" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing Debian's chromium"
    apt-get update -qq || echo "WARNING: apt-get update reported errors; continuing"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "run.sh: $CHROMIUM is missing; install Debian's chromium (apt-get install chromium)" >&2
    exit 1
  fi
fi

if [ -z "${MOTE_BIN:-}" ]; then
  echo "== cargo build --release"
  (cd "$root" && cargo build --release --quiet --bin mote)
fi

cd "$here"
echo "== npm ci"
npm ci --no-audit --no-fund --loglevel=error

echo "== browser test"
exec node test.mjs
