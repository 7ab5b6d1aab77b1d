# One image for the operator (`infercycle run`, the default) and the recycle agent sidecar
# (`infercycle agent`). The builder turns the source into wheels; the final stage installs them
# from a bind mount, so no source tree, compiler or wheel cache ends up in a layer. The bind
# mount needs BuildKit, Docker's default builder since 23.0.

# Both stages use the same base, so the wheels match the interpreter that runs them. The public
# image is the default; a machine without a registry passes its own build of a Debian bookworm
# Python 3.11 base (hack/cluster builds one with debootstrap).
# checkov:skip=CKV_DOCKER_7: the base is a build argument; its default below names a version
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# The project wheel first, then binary wheels of every dependency beside it: with
# --only-binary the build fails instead of quietly compiling something the final stage
# would need a toolchain for.
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && pip wheel --only-binary=:all: --wheel-dir /wheels /wheels/infercycle-*.whl

FROM ${BASE_IMAGE}
# The version in pyproject.toml; a mismatch fails the install instead of shipping another one.
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="infercycle" \
      org.opencontainers.image.description="Kubernetes operator and recycle agent for LLM inference servers" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# The root filesystem is read-only at run time: nothing may write bytecode next to the code,
# and HOME points at the one writable place (an emptyDir on /tmp).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    HOME=/tmp
# Install from the builder's wheels only (no index), byte-compiled now rather than at run time;
# then drop the packaging tools the image never needs again.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels --compile "infercycle==${VERSION}" \
    && pip uninstall --yes setuptools wheel \
    && groupadd --gid 65532 infercycle \
    && useradd --no-log-init --uid 65532 --gid 65532 --no-create-home \
       --home-dir /tmp --shell /usr/sbin/nologin infercycle
WORKDIR /tmp
USER 65532:65532
EXPOSE 8080 8081 8089
ENTRYPOINT ["infercycle"]
CMD ["run"]
