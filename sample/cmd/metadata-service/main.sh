#!/bin/sh
# metadata-service of the sample project: stands in for the model metadata API.
set -eu
. /opt/aibrix/lib/aibrix.sh

case "${1:-}" in
  --self-test) aibrix_self_test metadata-service ;;
  *)
    aibrix_banner metadata-service
    cat /opt/aibrix/share/metadata.conf
    ;;
esac
