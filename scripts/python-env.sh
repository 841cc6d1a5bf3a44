#!/bin/sh
# Creates the Python virtualenv the interop tests and the benchmark run the reference webmesh
# 0.1.2 from: .venv/ at the repository root (or $WEBMESH_VENV). Idempotent and quick when the venv
# is already complete. Needs python3 (3.11 here) with the venv module, and PyPI.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${WEBMESH_VENV:-$root/.venv}
req=$root/scripts/requirements-interop.txt
stamp=$venv/.webmesh-requirements
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && cmp -s "$req" "$stamp"; then
    exit 0
fi
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --disable-pip-version-check --quiet -r "$req"
"$venv/bin/python" -c 'import webmesh.webmesh_server, webmesh.webmesh_client, msgpack, websockets'
cp "$req" "$stamp"
echo "python env ready: $venv"
