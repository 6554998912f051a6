#!/usr/bin/env bash
# Makes this machine able to build and run our CPU image without a docker engine (see
# ../shared/reference/container_facts.md): podman, buildah and runc, a containers.conf that asks for no
# ulimits and uses runc, storage under one cache folder, and the two base images Dockerfile.cpu names
# (debian:bookworm-slim from debootstrap, and a stand-in for python:3.11-slim-bookworm). Everything is
# cached in $VFNET_PODMAN_HOME between runs on the same machine; a second run takes seconds.
#
#   source <(docker/podman/prepare.sh)   # prints the environment podman and buildah need
#
# The python base is a stand-in, not the official image: Debian's python3 (3.11 on bookworm) in
# /usr/bin with Debian's pip. Needs root (debootstrap, podman without user namespaces).
set -euo pipefail

home="${VFNET_PODMAN_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/vfnet-serve/podman}"
say() { echo "prepare: $*" >&2; }

missing=()
for tool in podman buildah runc debootstrap; do command -v "$tool" > /dev/null || missing+=("$tool"); done
if ((${#missing[@]})); then
    say "installing ${missing[*]} (apt)"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah runc debootstrap >&2
fi

mkdir -p "$home/storage" "$home/run"
cat > "$home/containers.conf" <<CONF
[containers]
# the sandbox cannot raise RLIMIT_NOFILE; podman's default ulimits would make every run fail
default_ulimits = []
[engine]
# crun refuses this machine's hybrid cgroups
runtime = "runc"
CONF
cat > "$home/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$home/storage"
runroot = "$home/run"
CONF
export CONTAINERS_CONF="$home/containers.conf" CONTAINERS_STORAGE_CONF="$home/storage.conf" BUILDAH_FORMAT=docker

if ! podman image exists docker.io/library/debian:bookworm-slim; then
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2> /dev/null || true)
    mirror=${mirror:-http://deb.debian.org/debian}
    rootfs="$home/rootfs"
    rm -rf "$rootfs"
    say "debootstrap bookworm from $mirror (a minute)"
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" > "$home/debootstrap.log" 2>&1 || { tail -20 "$home/debootstrap.log" >&2; exit 1; }
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
    find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
    printf 'Types: deb\nURIs: %s\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$mirror" > "$rootfs/etc/apt/sources.list.d/debian.sources"
    rm -f "$rootfs/etc/apt/sources.list"
    tar --numeric-owner -C "$rootfs" -c . | podman import --change 'CMD ["bash"]' - docker.io/library/debian:bookworm-slim > /dev/null
    rm -rf "$rootfs"
fi

if ! podman image exists docker.io/library/python:3.11-slim-bookworm; then
    say "building the stand-in for python:3.11-slim-bookworm"
    context=$(mktemp -d)
    printf '%s\n' 'FROM docker.io/library/debian:bookworm-slim' \
        'RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-pip ca-certificates && apt-get clean && rm -rf /var/lib/apt/lists/* && ln -sf /usr/bin/python3 /usr/local/bin/python' \
        > "$context/Dockerfile"
    buildah bud --quiet --isolation chroot --network host -t docker.io/library/python:3.11-slim-bookworm "$context" > /dev/null
    rm -rf "$context"
fi

echo "export CONTAINERS_CONF='$CONTAINERS_CONF' CONTAINERS_STORAGE_CONF='$CONTAINERS_STORAGE_CONF' BUILDAH_FORMAT=docker"
