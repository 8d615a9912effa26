#!/usr/bin/env bash
# eas image entrypoint. With EAS_RAY_JOIN=<head>:6379 (the Helm chart's eas-server pods)
# this pod first joins the RayCluster as a node with no CPUs, so eas-server (a Ray
# driver, which must run on a Ray node) can run here while instances go to workers.
# KubeRay's head and worker pods override the command and never reach this script.
set -euo pipefail
if [[ -n "${EAS_RAY_JOIN:-}" ]]; then
  ray start --address="${EAS_RAY_JOIN}" --num-cpus=0 --num-gpus=0 \
    ${POD_IP:+--node-ip-address="${POD_IP}"} --disable-usage-stats
  trap 'ray stop' EXIT
  "$@" &
  child=$!
  trap 'kill -TERM "$child" 2>/dev/null' TERM INT
  wait "$child"
  exit $?
fi
exec "$@"
