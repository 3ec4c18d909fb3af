#!/usr/bin/env bash
# Build the driftgate image from this checkout.
#
#   deploy/image/build.sh [--tag TAG] [--base IMAGE | --debootstrap] [--debian-mirror URL]
#
# --base IMAGE    the Dockerfile's BASE_IMAGE (default: python:3.11-slim, pulled by docker).
# --debootstrap   build the base from Debian packages instead (Debian bookworm: python3,
#                 python3-venv), import it as driftgate-base:bookworm and use it: for
#                 machines that reach Debian's archive and PyPI but no image registry.
#
# The Python packages are built into wheels on this machine (pip wheel, with this machine's
# pip configuration: its index, mirrors, constraints) into deploy/image/wheelhouse/, and the
# image installs from there with --no-index, so the build itself needs no network.
# Prints the image's size and the time each step took. Needs docker (a running daemon),
# python3 (with its venv module), and for --debootstrap, debootstrap and root.
set -euo pipefail
cd "$(dirname "$0")/../.."

tag=driftgate:0.1.0
base=""
debootstrap=0
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag=$2; shift 2 ;;
    --base) base=$2; shift 2 ;;
    --debootstrap) debootstrap=1; shift ;;
    --debian-mirror) mirror=$2; shift 2 ;;
    *) echo "build.sh: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
if [ "$debootstrap" = 1 ] && [ -n "$base" ]; then
  echo "build.sh: --base and --debootstrap exclude each other" >&2; exit 2
fi
command -v docker >/dev/null || { echo "build.sh: docker is not installed" >&2; exit 2; }
docker info >/dev/null 2>&1 || { echo "build.sh: no Docker daemon answers (start dockerd)" >&2; exit 2; }

step() { printf '%s: %ss\n' "$1" "$(( $(date +%s) - $2 ))"; }

if [ "$debootstrap" = 1 ]; then
  base=driftgate-base:bookworm
  if docker image inspect "$base" >/dev/null 2>&1; then
    echo "base image $base already present"
  else
    t=$(date +%s)
    rootfs=$(mktemp -d)
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3 \
      bookworm "$rootfs" "$mirror" >/dev/null
    # What an image needs no more than python:3.11-slim has: docs, man pages, locales, apt lists.
    rm -rf "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
      "$rootfs"/usr/share/locale/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
      "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/log/*.log
    tar -C "$rootfs" --numeric-owner -c . | docker import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$base" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
    step "base image $base (debootstrap + import)" "$t"
  fi
fi

t=$(date +%s)
wheelhouse=deploy/image/wheelhouse
find "$wheelhouse" -name '*.whl' -delete
# A throwaway venv's pip (ensurepip), so the host's Python needs no pip of its own.
work=$(mktemp -d)
if ! { python3 -m venv "$work/venv" && "$work/venv/bin/pip" wheel -q --wheel-dir "$wheelhouse" '.[otel]'; } >"$work/log" 2>&1; then
  cat "$work/log" >&2; rm -rf "$work"; echo "build.sh: pip wheel failed" >&2; exit 1
fi
rm -rf "$work"
step "wheelhouse ($(find "$wheelhouse" -name '*.whl' | wc -l) wheels)" "$t"

t=$(date +%s)
build_args=()
[ -n "$base" ] && build_args+=(--build-arg "BASE_IMAGE=$base")
DOCKER_BUILDKIT=0 docker build -q "${build_args[@]}" -t "$tag" . >/dev/null
step "docker build $tag" "$t"
find "$wheelhouse" -name '*.whl' -delete
size=$(docker image inspect --format '{{.Size}}' "$tag")
echo "image $tag: $(( size / 1024 / 1024 )) MiB"
