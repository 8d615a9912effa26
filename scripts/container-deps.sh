#!/usr/bin/env bash
# podman for container services (docs/operations.md, "Containers"): Debian's packages,
# and the engine settings that let it run on small VMs and in containers with a hybrid
# cgroup layout. Idempotent: does nothing when podman already runs a container.
set -euo pipefail

CONF=/etc/containers/containers.conf

if ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
  if [ "$(id -u)" != 0 ]; then
    echo "make container-deps: install podman and runc as root (apt-get install -y podman runc)" >&2
    exit 1
  fi
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman runc
fi

# runc (crun refuses the hybrid cgroup layout), cgroupfs (no systemd here), events in a
# file (no journald), and ulimits within the hard limits a container may be given (the
# defaults exceed them, and runc then refuses to start anything).
if [ ! -e "$CONF" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "make container-deps: write $CONF as root (see docs/operations.md, 'Containers')" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$CONF")"
  cat > "$CONF" <<'CONF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
  echo "wrote $CONF"
fi

podman info >/dev/null 2>&1 || { echo "make container-deps: podman is installed but 'podman info' fails:" >&2; podman info >&2; exit 1; }
