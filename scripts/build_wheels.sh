#!/usr/bin/env bash
# Build the wheels of qwenlayers and its four platform plugins into dist/ (or $1).
# Afterwards `pip install --find-links dist 'qwenlayers[a5]'` installs from the repo.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/dist}
mkdir -p "$out"
python -m pip wheel -q --no-deps --wheel-dir "$out" \
  "$root" "$root/plugins/a2a3" "$root/plugins/a5" "$root/plugins/a2a3sim" "$root/plugins/a5sim"
ls -1 "$out"/qwenlayers*.whl
