#!/bin/sh
# runtime of the sample project: stands in for the AI runtime sidecar.
set -eu
. /opt/aibrix/lib/aibrix.sh

case "${1:-}" in
  --self-test) aibrix_self_test runtime ;;
  *)
    aibrix_banner runtime
    echo "runtime engines: $(cat /opt/aibrix/share/engines)"
    ;;
esac
