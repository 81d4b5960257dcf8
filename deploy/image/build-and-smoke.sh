#!/bin/bash
# Build gearshift's container image from Debian packages alone, run it, and check it.
#
#   deploy/image/build-and-smoke.sh [--dockerfile FILE] [--compose FILE] [--name NAME]
#                                   [--extras LIST] [--no-compose] [--report FILE]
#
# No container registry is reachable where CI runs, so `FROM python:3.11-slim-bookworm`
# cannot be pulled. Instead the base comes from the Debian mirror apt already uses:
# `debootstrap --variant=minbase bookworm`, imported into podman, then a stand-in for the
# Dockerfile's FROM (Debian's python3 + venv) tagged with the very name the FROM uses, so
# the Dockerfile stays the one users build elsewhere against the real image. The same base
# gives stand-ins for the compose file's mosquitto and postgres images
# (deploy/image/standins).
#
# Then the project's Dockerfile is built (or FILE: the tests feed broken copies to prove
# every check can fail) and smoke-tested: `gearshift --version`; `gearshift validate` on
# the shipped policies; no compiler left in the image; its size; `gearshift demo --for 30`
# with its port published on 127.0.0.1 (status page and /metrics answer from the host),
# the image's HEALTHCHECK healthy while the demo runs and unhealthy once it has stopped,
# every process of the container non-root; and deploy/compose.yaml under podman-compose
# (the daemon becomes ready, /v1/status answers; with --profile ha, both daemons answer
# on the PostgreSQL journal and exactly one of them leads). A failed check prints `FAIL: CHECK: why`
# and exits 1; the figures are printed and, with --report, written as JSON.
#
# Podman's settings are this script's own (CONTAINERS_CONF, CONTAINERS_STORAGE_CONF,
# CONTAINERS_REGISTRIES_CONF), never the system's: storage, the base tarball and the layer
# cache live in $GEARSHIFT_IMAGE_CACHE (default /var/cache/gearshift-image), so a second
# run on the same machine skips debootstrap and reuses unchanged layers. Runs sharing a
# cache take turns (flock). Needs root and: podman runc debootstrap (Debian packages),
# podman-compose (pip, from the dev extra: Debian's 1.0.3 ignores compose profiles).
set -euo pipefail
given=("$@")  # for the re-run under the lock, below

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
dockerfile=$ROOT/Dockerfile
compose=$ROOT/deploy/compose.yaml
name=main
extras=""
run_compose=1
report=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dockerfile) dockerfile=$(realpath "$2"); shift 2 ;;
    --compose) compose=$(realpath "$2"); shift 2 ;;
    --name) name=$2; shift 2 ;;
    --extras) extras=$2; shift 2 ;;
    --no-compose) run_compose=0; shift ;;
    --report) report=$2; shift 2 ;;
    *) echo "usage: $0 [--dockerfile FILE] [--compose FILE] [--name NAME] [--extras LIST]" \
            "[--no-compose] [--report FILE]" >&2; exit 2 ;;
  esac
done

fail() { echo "FAIL: $1: $2" >&2; exit 1; }
ok() { echo "ok: $*" >&2; }
step() { echo "== $*" >&2; }
now() { date +%s.%N; }
# Podman wants systemd to time health checks; there is none here, so they are run by
# hand (`podman healthcheck run`) and its complaint about that is dropped.
quiet() { "$@" 2> >(grep -v 'unable to get systemd connection' >&2); }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

[ "$(id -u)" = 0 ] || { echo "$0 needs root (rootful podman, debootstrap)" >&2; exit 2; }
for tool in podman runc debootstrap curl flock; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install -y" \
    "--no-install-recommends podman runc debootstrap curl util-linux" >&2; exit 2; }
done
compose_tool=$(command -v "$ROOT/.venv/bin/podman-compose" || command -v podman-compose || true)
if [ "$run_compose" = 1 ] && [ -z "$compose_tool" ]; then
  echo "podman-compose is missing: .venv/bin/pip install -e '.[dev]'" >&2; exit 2
fi
[ -f "$dockerfile" ] || { echo "no such Dockerfile: $dockerfile" >&2; exit 2; }

# --- podman's own settings ------------------------------------------------------------
cache=${GEARSHIFT_IMAGE_CACHE:-/var/cache/gearshift-image}
mkdir -p "$cache"
# One run at a time per cache. The lock is held by flock(1) itself, not by a descriptor
# of this shell: every child would inherit that one, and the demo container's conmon
# (which outlives a killed run) then held the lock for good and the next run waited on
# it. `--close` keeps it out of this shell and so out of every child.
if [ -z "${GEARSHIFT_IMAGE_LOCKED:-}" ]; then
  GEARSHIFT_IMAGE_LOCKED=1 exec flock --close "$cache/lock" bash "$0" "${given[@]}"
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/gearshift-image.XXXXXX")
mkdir -p "$cache/run" "$cache/tmp" "$cache/cni"
cat >"$work/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$cache/storage"
runroot = "$cache/run"
EOF
# runc: crun fails here ("cgroups in hybrid mode not supported"). The default ulimits
# fail with "setrlimit ... Operation not permitted" on this machine kind.
cat >"$work/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=16384:16384"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$cache/tmp"
[network]
network_config_dir = "$cache/cni"
EOF
cat >"$work/registries.conf" <<EOF
unqualified-search-registries = ["docker.io"]
short-name-mode = "permissive"
EOF
export CONTAINERS_CONF=$work/containers.conf CONTAINERS_STORAGE_CONF=$work/storage.conf
export CONTAINERS_REGISTRIES_CONF=$work/registries.conf
# HEALTHCHECK exists only in the docker image format (OCI drops it).
export BUILDAH_FORMAT=docker

# A run killed before its cleanup (SIGKILL, a CI time-out) leaves its containers, pods,
# volumes and networks in this storage (the next run then finds their names taken), its
# containers maybe still running. Everything in this private storage is a smoke run's,
# and none runs while we hold the lock, so whatever is left is dropped: first with the
# runtime state as it is (a live leftover is stopped), then again once that state is
# dropped too (after a reboot it is stale: /var/cache is no tmpfs) and podman has
# refreshed as after a reboot.
drop_leftovers() {
  podman rm --all --force --time 0 --volumes >/dev/null 2>&1 || true
  podman pod rm --all --force >/dev/null 2>&1 || true
  podman volume prune --force >/dev/null 2>&1 || true
  podman network prune --force >/dev/null 2>&1 || true
}
drop_leftovers
rm -rf "$cache/run" "$cache/tmp"
mkdir -p "$cache/run" "$cache/tmp"
drop_leftovers
leftover=$(podman ps --all --quiet 2>/dev/null || true)
[ -z "$leftover" ] || fail storage "containers a killed run left could not be removed: $leftover"

tag=localhost/gearshift-smoke:$name
demo_tag=localhost/gearshift-smoke-demo:$name
demo=gearshift-smoke-demo-$name
project=gearshift-smoke-$name
compose() { quiet "$compose_tool" -p "$project" -f "$compose" "$@"; }
cleanup() {
  status=$?
  podman rm --force --time 0 --volumes "$demo" >/dev/null 2>&1 || true
  if [ -n "${compose_up:-}" ]; then
    compose --profile ha down --volumes >/dev/null 2>&1 || true
  fi
  podman image unmount "$tag" >/dev/null 2>&1 || true
  podman volume prune --force >/dev/null 2>&1 || true
  podman image prune --force >/dev/null 2>&1 || true
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# wait_http URL SECONDS: until URL answers 2xx; its body on stdout.
wait_http() {
  deadline=$(( $(date +%s) + $2 ))
  until curl -fsS --max-time 5 "$1" 2>/dev/null; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 1
  done
}

# --- base: debootstrap from the mirror apt uses ---------------------------------------
debian_mirror() {
  # deb822 (.sources: URIs/Suites) and one-line (.list: deb URI SUITE ...) formats.
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'BEGIN { RS = ""; FS = "\n" }
         { uri = ""; hit = 0
           for (i = 1; i <= NF; i++) {
             if ($i ~ /^URIs:/) { split($i, w, /[ \t]+/); uri = w[2] }
             if ($i ~ /^Suites:/) { n = split($i, s, /[ \t]+/); for (j = 2; j <= n; j++) hit = hit || s[j] == "bookworm" }
           }
           if (hit && uri != "") { print uri; exit } }' "$f"
  done
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) break;
                       if ($(i + 1) == "bookworm") print $i }' || true
}
started=$(now)
base_seconds=0
tarball=$cache/debian-bookworm-minbase.tar
if [ ! -s "$tarball" ]; then
  mirror=$(debian_mirror | head -n 1 || true)
  [ -n "$mirror" ] || { echo "no Debian bookworm mirror in /etc/apt/sources.list*" >&2; exit 2; }
  step "debootstrap --variant=minbase bookworm from $mirror"
  t=$(now)
  debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 20 "$work/debootstrap.log" >&2; fail base "debootstrap failed"; }
  rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*_Packages
  tar --numeric-owner -C "$work/rootfs" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  rm -rf "$work/rootfs"
  base_seconds=$(since "$t")
  podman rmi --force localhost/debian:bookworm >/dev/null 2>&1 || true
fi
if ! podman image exists localhost/debian:bookworm; then
  step "podman import $tarball"
  podman import --quiet --change 'CMD ["bash"]' "$tarball" localhost/debian:bookworm >/dev/null
fi

# --- stand-ins for the images the Dockerfile and the compose file name -----------------
# The Dockerfile's FROM, with its ARG default substituted.
from=$(awk '$1 == "FROM" { print $2; exit }' "$dockerfile")
if [[ $from =~ ^\$\{?([A-Za-z_]+)\}?$ ]]; then
  from=$(awk -v arg="${BASH_REMATCH[1]}" -F'[ =]' '$1 == "ARG" && $2 == arg { print $3; exit }' "$dockerfile")
fi
[[ $from =~ ^python:3\.11(-slim)?(-bookworm)?$ ]] \
  || fail base "the Dockerfile's FROM is '$from'; the stand-in is Debian bookworm's Python 3.11"
# Their Containerfiles are in deploy/image/standins; the build context gets this machine's
# extra CA certificates too (pip in the build must trust what the host trusts).
standin=$work/standin
cp -r "$ROOT/deploy/image/standins" "$standin"
mkdir -p "$standin/ca-certificates"
cp /usr/local/share/ca-certificates/*.crt "$standin/ca-certificates/" 2>/dev/null || true
# Tagged with the name the FROM means: a short name is Docker Hub's library image.
standin_tag=$from
[[ $standin_tag == */* ]] || standin_tag=docker.io/library/$standin_tag
standin() {  # standin KIND NAME
  step "stand-in for $2 (Debian's $1)"
  podman build --quiet --layers -f "$standin/$1.Containerfile" -t "$2" "$standin" >/dev/null \
    || fail base "the stand-in for $2 did not build"
}
# The compose file's image for a service: compose_image SERVICE DEFAULT.
compose_image() {
  awk -v service="  $1:" '$0 == service { inside = 1; next } inside && /^  [a-z]/ { exit }
                          inside && $1 == "image:" { print $2; exit }' "$compose" 2>/dev/null | grep . \
    || echo "$2"
}
standin python "$standin_tag"
standin mosquitto "$(compose_image mosquitto docker.io/library/eclipse-mosquitto:2)"
[ "$run_compose" = 0 ] || standin postgres "$(compose_image postgres docker.io/library/postgres:15)"
base_total=$(since "$started")

# --- the image itself ------------------------------------------------------------------
step "podman build -f $dockerfile"
build_args=()
[ -n "$extras" ] && build_args=(--build-arg "EXTRAS=$extras")
t=$(now)
# The build stage is tagged too: an untagged stage is "dangling" and the prune at the end
# would drop it, and with it the cached wheel build the next run could reuse.
for target in build ""; do
  if [ -n "$target" ]; then
    grep -qiE "^FROM .* AS $target\b" "$dockerfile" || continue
    args=(--target "$target" -t "$tag-$target")
  else
    args=(-t "$tag")
  fi
  podman build --layers --format docker "${build_args[@]}" "${args[@]}" -f "$dockerfile" "$ROOT" \
    >>"$work/build.log" 2>&1 || { tail -n 30 "$work/build.log" >&2; fail build "podman build failed"; }
done
build_seconds=$(since "$t")
image_bytes=$(podman image inspect --format '{{.Size}}' "$tag")
image_mb=$(( image_bytes / 1000000 ))
base_bytes=$(podman image inspect --format '{{.Size}}' "$standin_tag")
ok "built $tag in ${build_seconds}s, ${image_mb} MB (the stand-in base: $(( base_bytes / 1000000 )) MB)"

want=$(awk -F'"' '/^version *=/ { print $2; exit }' "$ROOT/pyproject.toml")
got=$(podman run --rm --no-healthcheck --entrypoint gearshift "$tag" --version 2>&1) \
  || fail version "gearshift --version failed: $got"
[[ $got == *"$want"* ]] || fail version "gearshift --version says '$got', pyproject says $want"
ok "gearshift --version: $got"

out=$(podman run --rm --no-healthcheck -v "$ROOT/policies:/etc/gearshift/policies:ro" --entrypoint gearshift \
      "$tag" validate /etc/gearshift/policies 2>&1) || fail validate "$out"
ok "gearshift validate /etc/gearshift/policies: $out"

user=$(podman image inspect --format '{{.Config.User}}' "$tag")
uid=$(podman run --rm --no-healthcheck --entrypoint id "$tag" -u)
[ "$uid" != 0 ] || fail non-root "the image runs as uid 0 (USER '${user:-unset}')"
ok "the image runs as uid $uid (USER $user)"

healthcheck=$(podman image inspect --format '{{json .Config.Healthcheck}}' "$tag")
[[ $healthcheck == *Test* ]] || fail healthcheck "the image has no HEALTHCHECK: $healthcheck"

# No compiler, no build headers: looked for in the image's files, not with its own shell.
root=$(podman image mount "$tag")
compilers=$(cd "$root" && ls -d usr/bin/gcc* usr/bin/cc usr/bin/c++ usr/bin/g++* usr/bin/*-linux-gnu-gcc* \
            usr/bin/clang* usr/bin/tcc usr/lib/gcc/*/*/cc1 usr/libexec/gcc usr/include/libxml2 \
            2>/dev/null || true)
podman image unmount "$tag" >/dev/null
[ -z "$compilers" ] || fail no-compiler "left in the image: $(echo $compilers)"
ok "no compiler or build headers in the image"

# --- gearshift demo in the container ---------------------------------------------------
# The demo starts its own broker (mosquitto when installed): a throw-away layer adds
# Debian's mosquitto to the image for this run, keeping the image's USER, ENTRYPOINT and
# HEALTHCHECK. The image itself ships no broker.
printf 'FROM %s\nUSER root\nRUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mosquitto && rm -rf /var/lib/apt/lists/*\nUSER %s\n' \
  "$tag" "${user:-root}" >"$work/Containerfile.demo"
podman build --quiet --layers -f "$work/Containerfile.demo" -t "$demo_tag" "$work" >/dev/null
port=$(free_port)
step "gearshift demo --for 30 in the container, published on 127.0.0.1:$port"
# The demo runs as a child of sh, so the container outlives it and the HEALTHCHECK can
# be seen turning unhealthy once the daemon is gone.
quiet podman run -d --name "$demo" -p "127.0.0.1:$port:9310" --entrypoint sh "$demo_tag" -c \
  'gearshift demo --for 30 --host 0.0.0.0; echo "gearshift demo exited: $?"; exec sleep 600' >/dev/null
page=$(wait_http "http://127.0.0.1:$port/" 60) \
  || { podman logs "$demo" >&2; fail demo "the status page never answered on 127.0.0.1:$port"; }
[[ $page == *gearshift* ]] || fail demo "the status page does not look like gearshift's"
metrics=$(curl -fsS "http://127.0.0.1:$port/metrics") || fail demo "/metrics did not answer"
[[ $metrics == *gearshift_* ]] || fail demo "/metrics has no gearshift_* metric"
ok "status page and /metrics answer from the host"

healthy=""
for _ in $(seq 20); do
  if podman healthcheck run "$demo" >/dev/null 2>&1; then healthy=1; break; fi
  sleep 1
done
[ -n "$healthy" ] || fail healthcheck "the HEALTHCHECK never passed while the demo ran: $(
  podman healthcheck run "$demo" 2>&1 || true)"
ok "HEALTHCHECK healthy while the demo runs"

# Every process in the container's PID namespace, read from the host's /proc (the image
# has no ps for `podman top`); rootful without a user namespace, uids are the same.
pid=$(podman inspect --format '{{.State.Pid}}' "$demo")
pidns=$(readlink "/proc/$pid/ns/pid")
uids=""
for proc in /proc/[0-9]*; do
  [ "$(readlink "$proc/ns/pid" 2>/dev/null)" = "$pidns" ] || continue
  u=$(awk '/^Uid:/ { print $2; exit }' "$proc/status" 2>/dev/null) || continue
  [ -n "$u" ] || continue
  [ "$u" != 0 ] || fail non-root "$(tr '\0' ' ' <"$proc/cmdline") runs as root in the container"
  uids="$uids $u"
done
[ -n "$uids" ] || fail non-root "no process found in the container"
ok "every process in the container runs as non-root (uids:$(echo $uids | tr ' ' '\n' | sort -u | tr '\n' ' '))"

for _ in $(seq 60); do
  podman logs "$demo" 2>&1 | grep -q "gearshift demo exited" && break
  sleep 1
done
logs=$(podman logs "$demo" 2>&1)
[[ $logs == *"gearshift demo exited: 0"* ]] || { echo "$logs" >&2; fail demo "the demo did not end cleanly"; }
[[ $logs == *"nodes created"* ]] || { echo "$logs" >&2; fail demo "no demo summary"; }
if podman healthcheck run "$demo" >/dev/null 2>&1; then
  fail healthcheck "still healthy after the daemon stopped: the check does not test the daemon"
fi
ok "HEALTHCHECK unhealthy once the demo stopped"
quiet podman rm --force --time 0 --volumes "$demo" >/dev/null

# --- compose ---------------------------------------------------------------------------
compose_seconds=null
if [ "$run_compose" = 1 ]; then
  step "$compose_tool up -d ($compose)"
  t=$(now)
  compose_port=$(free_port)
  world_port=$(free_port)
  export GEARSHIFT_IMAGE=$tag GEARSHIFT_PORT=$compose_port GEARSHIFT_WORLD_PORT=$world_port
  compose_up=1
  compose up -d >"$work/compose.log" 2>&1 \
    || { tail -n 30 "$work/compose.log" >&2; fail compose "up failed"; }
  if ! wait_http "http://127.0.0.1:$compose_port/readyz" 90 >/dev/null; then
    compose logs >&2 2>&1 || true
    fail compose "the daemon never became ready on 127.0.0.1:$compose_port"
  fi
  status=$(curl -fsS "http://127.0.0.1:$compose_port/v1/status") || fail compose "/v1/status did not answer"
  [[ $status == *'"small"'* ]] || fail compose "/v1/status has no pool small: $status"
  ok "compose: the daemon is ready and /v1/status answers"
  compose down --volumes >/dev/null 2>&1

  # Profile ha: both daemons journal to PostgreSQL; exactly one of them leads.
  step "$compose_tool --profile ha up -d"
  standby_port=$(free_port)
  export GEARSHIFT_JOURNAL=postgres GEARSHIFT_STANDBY_PORT=$standby_port
  compose --profile ha up -d >"$work/compose.log" 2>&1 \
    || { tail -n 30 "$work/compose.log" >&2; fail compose-ha "up failed"; }
  if ! wait_http "http://127.0.0.1:$compose_port/readyz" 120 >/dev/null; then
    compose --profile ha logs >&2 2>&1 || true
    fail compose-ha "the daemon never became ready on PostgreSQL"
  fi
  leaders=0
  for p in "$compose_port" "$standby_port"; do
    body=$(wait_http "http://127.0.0.1:$p/v1/status" 60) || fail compose-ha "/v1/status on :$p did not answer"
    leader=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["leader"])' <<<"$body")
    [ "$leader" = True ] && leaders=$((leaders + 1))
  done
  [ "$leaders" = 1 ] || fail compose-ha "$leaders leaders among the two daemons, not 1"
  ok "compose --profile ha: both daemons answer on PostgreSQL, exactly one leads"
  compose --profile ha down --volumes >/dev/null 2>&1
  compose_up=""
  compose_seconds=$(since "$t")
fi

total_seconds=$(since "$started")
cold=$([ "$base_seconds" = 0 ] && echo false || echo true)
figures=$(printf '{"image": "%s", "image_bytes": %s, "base_bytes": %s, "debootstrap_seconds": %s, "cold_base": %s, "base_and_standins_seconds": %s, "build_seconds": %s, "compose_seconds": %s, "total_seconds": %s}' \
  "$tag" "$image_bytes" "$base_bytes" "$base_seconds" "$cold" "$base_total" "$build_seconds" "$compose_seconds" "$total_seconds")
echo "$figures"
[ -z "$report" ] || echo "$figures" >"$report"
echo "all checks passed: image ${image_mb} MB, build ${build_seconds}s, total ${total_seconds}s" >&2
