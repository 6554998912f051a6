#!/bin/sh
# The one entrypoint of both images (Dockerfile.cpu, Dockerfile.gpu).
#   serve [FLAGS]   (the default) `vfnet serve`, its settings from VFNET_* variables and FLAGS
#   healthcheck     exit 0 when /readyz answers 200 (the images' HEALTHCHECK and compose's)
#   anything else   run as given, e.g. `vfnet eval --model /models/m.onnx --data /data`
set -eu

case "${1:-serve}" in
serve)
    [ "$#" -gt 0 ] && shift
    exec vfnet serve "$@"
    ;;
healthcheck)
    exec python -c '
import os, sys, urllib.request
host = os.environ.get("VFNET_HOST", "0.0.0.0")
host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
port = os.environ.get("VFNET_PORT", "8000")
url = f"http://{host}:{port}/readyz"
try:
    with urllib.request.urlopen(url, timeout=3) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception as exc:  # 503 while loading or building, or not listening yet
    print(f"{url}: {exc}", file=sys.stderr)
    sys.exit(1)
'
    ;;
*)
    exec "$@"
    ;;
esac
