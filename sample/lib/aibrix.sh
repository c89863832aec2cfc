# Helpers shared by the sample components (busybox sh). Sourced by each cmd/*/main.sh.

# The components this image is, space-separated: one, or two for the image that
# build/container/Dockerfile.python builds once for metadata-service and runtime.
aibrix_components() { cat /etc/aibrix-component; }

# One line that says which component runs, on what, built for what.
aibrix_banner() {
  echo "aibrix-sample $1 $(uname -m) (built for $(cat /opt/aibrix/share/arch))"
}

# Checks an image on itself at build time: right component, right architecture,
# files intact. Exits non-zero with a reason on stderr when something is off.
aibrix_self_test() {
  expected=$1
  actual=$(aibrix_components)
  case " $actual " in
    *" $expected "*) ;;
    *) echo "self-test: /etc/aibrix-component says $actual, expected $expected" >&2; return 1 ;;
  esac
  if [ "$(cat /opt/aibrix/share/arch)" != "$(uname -m)" ]; then
    echo "self-test: built for $(cat /opt/aibrix/share/arch) but running on $(uname -m)" >&2
    return 1
  fi
  if ! (cd /opt/aibrix && sha256sum -c share/SHA256SUMS >/dev/null); then
    echo "self-test: checksums in /opt/aibrix/share/SHA256SUMS do not match" >&2
    return 1
  fi
  echo "self-test ok: $expected on $(uname -m)"
}
