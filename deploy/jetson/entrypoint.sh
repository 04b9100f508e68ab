#!/usr/bin/env bash
# Entry point of the Jetson container: preflight checks, TensorRT engine build on first start, then the daemon.
#   run (default)   preflight + warm-up (builds/caches engines), then `lineside run`
#   preflight       only the checks and the warm-up, print the JSON result
#   <anything else> exec'd as is (e.g. `lineside soak --minutes 30`)
set -euo pipefail

CONFIG="${LINESIDE_CONFIG:-/etc/lineside/config.yaml}"
CACHE="${ORT_TENSORRT_CACHE_PATH:-/var/cache/lineside/engines}"
PYTHON="${LINESIDE_PYTHON:-python3}"
LINESIDE="${LINESIDE_BIN:-lineside}"

preflight() {
    mkdir -p "$CACHE"
    if [ -z "$(ls -A "$CACHE" 2>/dev/null)" ]; then
        echo "lineside: no TensorRT engines in $CACHE yet; the first start builds them (several minutes)" >&2
    fi
    "$PYTHON" -m edge.preflight --config "$CONFIG" --warm-up
}

cmd="${1:-run}"
case "$cmd" in
    run)
        shift || true
        preflight >&2
        exec "$LINESIDE" --log-format "${LINESIDE_LOG_FORMAT:-json}" run --config "$CONFIG" "$@"
        ;;
    preflight)
        preflight
        ;;
    *)
        exec "$@"
        ;;
esac
