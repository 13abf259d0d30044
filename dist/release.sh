#!/usr/bin/env bash
# Builds the release artifact: the stripped `baton` binary and a tarball
# with it, README.md, the licenses, flows.yaml and scripts/. Prints the
# tarball's path, size and sha256.
#
#   dist/release.sh              build with cargo, then package
#   BATON_BIN=path dist/release.sh   package that binary (the tests do this)
#   OUT=dir                      where the tarball goes (default: dist/out)
#
# The Dockerfile runs this same script.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
target=$(uname -m)-linux
name="baton-${version}-${target}"
out=${OUT:-dist/out}

if [[ -z "${BATON_BIN:-}" ]]; then
  cargo build --release --locked
  BATON_BIN=target/release/baton
fi
[[ -x "$BATON_BIN" ]] || { echo "error: no binary at $BATON_BIN" >&2; exit 1; }

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/$name"
cp "$BATON_BIN" "$stage/$name/baton"
cp README.md LICENSE-MIT LICENSE-APACHE flows.yaml "$stage/$name/"
cp -r scripts "$stage/$name/scripts"

mkdir -p "$out"
tarball="$out/$name.tar.gz"
tar -C "$stage" -czf "$tarball" "$name"
size=$(stat -c %s "$tarball")
binsize=$(stat -c %s "$stage/$name/baton")
sum=$(sha256sum "$tarball" | cut -d' ' -f1)
echo "$tarball"
echo "binary:  $binsize bytes"
echo "tarball: $size bytes"
echo "sha256:  $sum"
