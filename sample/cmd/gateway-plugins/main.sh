#!/bin/sh
# gateway-plugins of the sample project: stands in for the gateway's routing plugins.
set -eu
. /opt/aibrix/lib/aibrix.sh

case "${1:-}" in
  --self-test) aibrix_self_test gateway-plugins ;;
  *)
    aibrix_banner gateway-plugins
    echo "routing strategies: $(cat /opt/aibrix/share/strategies)"
    ;;
esac
