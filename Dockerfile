# The default sandbox image of Cortex (docs/images.md, "The default image").
# Built by container/build-default.sh (`make image`), which assembles the build
# context: this file and the Claude Code executable of the version the Makefile
# pins (CLAUDE_CODE_VERSION), checked before the build.  Where a registry is
# reachable, `--build-arg BASE=debian:bookworm-slim` works unchanged; here the
# base is the mmdebstrap rootfs of container/mkbase.sh.
ARG BASE=debian:bookworm-slim
FROM ${BASE}

ARG CLAUDE_CODE_VERSION=unknown
LABEL org.opencontainers.image.title="cortex-default" \
      org.opencontainers.image.description="Cortex default sandbox: Debian bookworm, Node, git, Claude Code" \
      org.opencontainers.image.base.name="${BASE}" \
      cortex.claude-code.version="${CLAUDE_CODE_VERSION}" \
      cortex.debian.suite="bookworm"

ARG DEBIAN_FRONTEND=noninteractive
ENV LANG=C.UTF-8

# No recommends: they double the size (and bring build toolchains via npm).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      nodejs npm git ca-certificates \
      procps less ripgrep python3-minimal jq unzip xz-utils openssh-client \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /usr/share/doc/* /usr/share/man/* \
 && mkdir -p /workspace /home/agent \
 && chmod 1777 /workspace /home/agent

# The native Claude Code executable (glibc only; needs no Node).
COPY claude /usr/local/bin/claude

ENV HOME=/home/agent
WORKDIR /workspace
CMD ["/bin/bash"]
