# The aibrix-release-bot image: one image for `aibrix-bot serve` and `aibrix-bot worker`.
#
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     --build-arg SOURCE_DATE_EPOCH="$(git log -1 --format=%ct)" \
#     -t registry.example.com/aibrix/aibrix-release-bot:0.1.0 --push .
#
# Build arguments (all pinned by the caller; see docs/deploy.md):
#   BASE_IMAGE          a Debian-based image with Python 3.11+ as `python3`: by default the
#                       official python:3.11-slim-bookworm, pinned by digest (tag shown for
#                       humans); or a debootstrap'd Debian 12 with Debian's python3. Pin any
#                       other by digest too. Used for both stages, so the venv's interpreter
#                       path is the same at build and at run time.
#   SOURCE_DATE_EPOCH   timestamp of every file of the venv and of the wheels (default 0);
#                       BuildKit 0.11+ also uses it for the image's own timestamps.
#   PIP_VERSION         pip used in the builder (pinned).
#   PIP_CONSTRAINT      path, inside the build context, of the constraints file pinning every
#                       dependency and the build backend (default constraints.txt, the lock
#                       that `scripts/lock` generates with pip-compile); empty: the newest
#                       versions pyproject.toml allows, taken at build time.
#   DOCKER_CLI_SOURCE   where the worker's docker CLI and buildx plugin come from:
#                         image   (default) copied from DOCKER_CLI_IMAGE, which has them at
#                                 /usr/local/bin/docker and
#                                 /usr/local/libexec/docker/cli-plugins/docker-buildx, like the
#                                 official docker:*-cli images (static binaries, any base);
#                         apt     installed from the base's package manager: packages docker-cli
#                                 and docker-buildx, which Debian 13 (trixie) has and Debian 12
#                                 does not (it has no buildx);
#                         context taken from the build context, build/docker-cli/OS-ARCH[VARIANT]/
#                                 docker and docker-buildx (e.g. build/docker-cli/linux-arm64/),
#                                 for offline builds from binaries you unpacked yourself.
#   DOCKER_CLI_IMAGE    the image for DOCKER_CLI_SOURCE=image (default docker:27.5.1-cli, pinned
#                       by digest).
#   RUNTIME_PACKAGES    Debian packages the runtime needs and installs when the base lacks
#                       them (default: git openssh-client ca-certificates, for checkouts).
#   APT_SNAPSHOT        optional snapshot.debian.org timestamp (e.g. 20250520T000000Z) to
#                       install those packages from, so a rebuild gets the same versions.
#   VERSION, REVISION   written into the OCI labels.
#
# No `# syntax=` line on purpose: the Dockerfile uses only what the BuildKit built into
# Docker 20.10 understands, so it builds where no frontend image can be pulled.

# Digests of the official multi-platform indexes (tag kept for humans; the digest wins),
# taken from public sources, not pulled here: check with `docker buildx imagetools inspect`.
ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b
ARG DOCKER_CLI_SOURCE=image
ARG DOCKER_CLI_IMAGE=docker.io/library/docker:27.5.1-cli@sha256:851f91d241214e7c6db86513b270d58776379aacc5eb9c4a87e5b47115e3065c

# ---------------------------------------------------------------- docker CLI + buildx
FROM ${DOCKER_CLI_IMAGE} AS docker-cli-image

FROM ${BASE_IMAGE} AS docker-cli-apt
USER root
RUN set -eux; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        docker-cli docker-buildx; \
    mkdir -p /usr/local/libexec/docker/cli-plugins; \
    cp /usr/bin/docker /usr/local/bin/docker; \
    cp /usr/libexec/docker/cli-plugins/docker-buildx \
        /usr/local/libexec/docker/cli-plugins/docker-buildx; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*

FROM ${BASE_IMAGE} AS docker-cli-context
ARG TARGETOS
ARG TARGETARCH
ARG TARGETVARIANT
COPY build/docker-cli/${TARGETOS}-${TARGETARCH}${TARGETVARIANT}/docker /usr/local/bin/docker
COPY build/docker-cli/${TARGETOS}-${TARGETARCH}${TARGETVARIANT}/docker-buildx \
     /usr/local/libexec/docker/cli-plugins/docker-buildx

# BuildKit builds only the stage this names (and what it needs).
FROM docker-cli-${DOCKER_CLI_SOURCE} AS docker-cli

# ---------------------------------------------------------------- builder
FROM ${BASE_IMAGE} AS builder
ARG SOURCE_DATE_EPOCH=0
ARG PIP_VERSION=24.3.1
ARG PIP_CONSTRAINT=constraints.txt
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH}
USER root

# Debian's python3 comes without venv/ensurepip, and a minimal Debian without CA
# certificates (pip needs them); the builder adds what is missing.
# PIP_CONSTRAINT (an ARG, so in this step's environment too) names a file copied later:
# pip itself is pinned by PIP_VERSION, not by the lock.
RUN set -eux; \
    unset PIP_CONSTRAINT; \
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; \
    need=; \
    python3 -c 'import ensurepip, venv' 2>/dev/null || need="$need python3-venv"; \
    [ -s /etc/ssl/certs/ca-certificates.crt ] || need="$need ca-certificates"; \
    if [ -n "$need" ]; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $need; \
        apt-get clean; \
        rm -rf /var/lib/apt/lists/* /var/cache/apt/*; \
    fi; \
    python3 -m venv /opt/aibrix; \
    /opt/aibrix/bin/python -m pip install --no-compile "pip==${PIP_VERSION}"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY handlers ./handlers
COPY jobs ./jobs
# The constraints file (constraints.txt unless the caller names another or none;
# pyproject.toml only makes the source list non-empty when none is named).
# .dockerignore lets constraints*.txt and constraints/ in.
COPY pyproject.toml ${PIP_CONSTRAINT} /src/constraints/

# A wheel of the project and of every dependency, then an offline install of exactly those
# wheels into the venv. Byte-code is compiled with hashes instead of timestamps, every file
# gets SOURCE_DATE_EPOCH, and pip leaves the venv: the runtime stage takes only /opt/aibrix.
# pip reads PIP_CONSTRAINT from the environment, so the pins also hold for the isolated
# build environments (setuptools) of the wheels it builds.
RUN set -eux; \
    if [ -n "${PIP_CONSTRAINT}" ]; then \
        export PIP_CONSTRAINT="/src/constraints/$(basename "${PIP_CONSTRAINT}")"; \
    fi; \
    /opt/aibrix/bin/python -m pip wheel --wheel-dir /wheels .; \
    /opt/aibrix/bin/python -m pip install --no-index --find-links /wheels --no-compile \
        aibrix-release-bot; \
    if [ -z "$(/opt/aibrix/bin/python -m pip show setuptools 2>/dev/null \
               | sed -n 's/^Required-by: *//p')" ]; then \
        /opt/aibrix/bin/python -m pip uninstall -y setuptools; \
    fi; \
    /opt/aibrix/bin/python -m pip uninstall -y pip; \
    rm -f /opt/aibrix/bin/activate* /opt/aibrix/bin/Activate.ps1; \
    find /opt/aibrix -name '__pycache__' -prune -exec rm -rf {} +; \
    find /opt/aibrix -name 'direct_url.json' -exec rm -f {} +; \
    /opt/aibrix/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash \
        /opt/aibrix/lib; \
    find /opt/aibrix -exec touch -h -d "@${SOURCE_DATE_EPOCH}" {} +; \
    /opt/aibrix/bin/aibrix-bot --help >/dev/null

# ---------------------------------------------------------------- runtime
FROM ${BASE_IMAGE} AS runtime
ARG SOURCE_DATE_EPOCH=0
ARG VERSION=0.1.0
ARG REVISION=unknown

LABEL org.opencontainers.image.title="aibrix-release-bot" \
      org.opencontainers.image.description="Slack chat-ops bot and per-platform build workers for multi-architecture container releases" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

# The worker checks sources out with git (https:// and ssh:// remotes). Install what the
# base lacks, from a dated Debian snapshot when APT_SNAPSHOT is given, and leave no apt
# lists or caches behind.
ARG RUNTIME_PACKAGES="git openssh-client ca-certificates"
ARG APT_SNAPSHOT=
USER root
RUN set -eu; \
    missing=; \
    for pkg in ${RUNTIME_PACKAGES}; do \
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
            || missing="$missing $pkg"; \
    done; \
    if [ -n "$missing" ]; then \
        set -x; \
        apt_opts=; \
        if [ -n "${APT_SNAPSHOT}" ]; then \
            . /etc/os-release; \
            printf '%s\n' \
                "deb [check-valid-until=no] http://snapshot.debian.org/archive/debian/${APT_SNAPSHOT} ${VERSION_CODENAME} main" \
                "deb [check-valid-until=no] http://snapshot.debian.org/archive/debian-security/${APT_SNAPSHOT} ${VERSION_CODENAME}-security main" \
                >/tmp/snapshot.list; \
            apt_opts="-o Dir::Etc::SourceList=/tmp/snapshot.list -o Dir::Etc::SourceParts=/dev/null"; \
        fi; \
        apt-get $apt_opts update; \
        DEBIAN_FRONTEND=noninteractive apt-get $apt_opts install -y --no-install-recommends $missing; \
        apt-get clean; \
        rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt/* /var/log/dpkg.log \
            /tmp/snapshot.list; \
    fi

# The rest are files copied in from the other stages.
COPY --from=docker-cli /usr/local/bin/docker /usr/local/bin/docker
COPY --from=docker-cli /usr/local/libexec/docker/cli-plugins/docker-buildx \
     /usr/local/libexec/docker/cli-plugins/docker-buildx
COPY --from=builder /opt/aibrix /opt/aibrix

# HOME and BUILDX_CONFIG point at /tmp, the one writable place with a read-only root
# filesystem (the Helm chart mounts an emptyDir there). DOCKER_CONFIG is where the chart
# mounts the registry credentials; the docker CLI reads them from there.
ENV PATH=/opt/aibrix/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    BUILDX_CONFIG=/tmp/buildx \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt

# A numeric non-root user (Kubernetes' runAsNonRoot can verify it), with a passwd entry
# because ssh (git over ssh://) refuses to run for a uid it cannot look up. Appended by
# hand rather than with useradd, which would write dated shadow and log files.
RUN set -eu; \
    grep -q '^[^:]*:[^:]*:10001:' /etc/group || echo 'aibrix:x:10001:' >>/etc/group; \
    grep -q '^[^:]*:[^:]*:10001:' /etc/passwd \
        || echo 'aibrix:x:10001:10001:aibrix-release-bot:/tmp:/usr/sbin/nologin' >>/etc/passwd
USER 10001:10001
WORKDIR /tmp
EXPOSE 3000 9100
ENTRYPOINT ["aibrix-bot"]
CMD ["--help"]
