#!/bin/sh
# kvcache-watcher of the sample project: stands in for the KV cache watcher.
set -eu
. /opt/aibrix/lib/aibrix.sh

case "${1:-}" in
  --self-test) aibrix_self_test kvcache-watcher ;;
  *)
    aibrix_banner kvcache-watcher
    echo "watching kvcache pods with selector $(cat /opt/aibrix/share/selector)"
    ;;
esac
