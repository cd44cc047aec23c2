#!/usr/bin/env bash
# A Ray head and one worker on this machine, bound to 127.0.0.1, with the dashboard's job server:
#   cluster/local.sh start     # then: vfmkd submit --address http://127.0.0.1:8265 demo
#   cluster/local.sh stop
# Token authentication is on (Ray >= 2.59 default for local clusters); the token is in
# ~/.ray/auth_token, which `vfmkd submit` on this machine picks up.
set -euo pipefail
RAY=${RAY:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/ray}
# Jobs run `python -m jobs.<command>`: on this machine that must be the environment Ray runs in.
export PATH="$(dirname "$RAY"):$PATH"
# Keep idle worker processes, as a local Ray of `vfmkd` does (vfmkd_ray/ray_session.py): Ray's
# default kills read/decode workers between two passes and restarts them every epoch.
export RAY_idle_worker_killing_time_threshold_ms=600000
GCS_PORT=${GCS_PORT:-6379}
DASHBOARD_PORT=${DASHBOARD_PORT:-8265}
case "${1:-}" in
  start)
    "$RAY" start --head --node-ip-address=127.0.0.1 --port="$GCS_PORT" --dashboard-host=127.0.0.1 \
      --dashboard-port="$DASHBOARD_PORT" --num-cpus="${HEAD_CPUS:-2}" --num-gpus=0 --disable-usage-stats
    "$RAY" start --address="127.0.0.1:$GCS_PORT" --node-ip-address=127.0.0.1 --num-cpus="${WORKER_CPUS:-2}"
    echo "job server: http://127.0.0.1:$DASHBOARD_PORT"
    ;;
  stop)
    "$RAY" stop
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
