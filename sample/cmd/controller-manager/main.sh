#!/bin/sh
# controller-manager of the sample project: stands in for the Kubernetes controllers.
set -eu
. /opt/aibrix/lib/aibrix.sh

case "${1:-}" in
  --self-test) aibrix_self_test controller-manager ;;
  *)
    aibrix_banner controller-manager
    echo "watching: $(cat /opt/aibrix/share/controllers)"
    ;;
esac
