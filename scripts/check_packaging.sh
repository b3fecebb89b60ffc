#!/usr/bin/env bash
# Packaging check: build all wheels, gather their third-party dependencies into a wheelhouse,
# then install qwenlayers[a5sim] into a fresh venv with no index at all and run it. Only the
# install step is offline: building the wheels and gathering the wheelhouse use the index.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d)}
mkdir -p "$work"
bash "$root/scripts/build_wheels.sh" "$root/dist"
echo "--- collecting dependencies into $work/wheelhouse"
python -m pip download -q -d "$work/wheelhouse" --find-links "$root/dist" torch==2.13.0 'qwenlayers[a5sim]==0.1.0'
echo "--- fresh venv, offline install"
python -m venv "$work/fresh"
start=$(date +%s)
"$work/fresh/bin/pip" install -q --no-index --find-links "$root/dist" --find-links "$work/wheelhouse" torch==2.13.0 'qwenlayers[a5sim]'
echo "offline install took $(( $(date +%s) - start )) s"
cd "$work"   # not the repo: prove the installed wheels work on their own
"$work/fresh/bin/qwenlayers" --version
"$work/fresh/bin/qwenlayers" platforms
"$work/fresh/bin/qwenlayers" smoke
"$work/fresh/bin/qwenlayers" run   # the README main job: a checked decode layer on a5sim
