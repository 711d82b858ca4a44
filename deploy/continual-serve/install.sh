#!/bin/sh
# Builds the continual-serve wheel from this repository and installs it into a new virtual environment, with the
# versions requirements.lock pins. The Dockerfile runs it, and so does tests/test_serve_install.py.
#
#   sh deploy/continual-serve/install.sh VENV PYTHON
#
# Needs uv (pip install -c requirements.lock uv). Downloads go to uv's cache: $UV_CACHE_DIR, or none with UV_NO_CACHE=1.
set -eu
venv=$1
python=$2
root=$(cd "$(dirname "$0")/../.." && pwd)
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
export UV_PYTHON_DOWNLOADS=never  # the given interpreter, never one fetched from elsewhere

uv build --quiet --wheel --out-dir "$wheels" "$root/deploy/continual-serve"
uv venv --quiet --python "$python" "$venv"
# Copies, not links into uv's cache: the environment stands alone.
uv pip install --quiet --python "$venv/bin/python" --link-mode copy \
    --constraint "$root/requirements.lock" "$wheels"/continual_serve-*.whl
# Bytecode compiled now: under a read-only root file system Python cannot cache it, and every worker would compile
# the modules again at each start. Checked against a hash of the source, not its modification time, which a copy
# into another image layer does not keep to the second (the bytecode would then be stale and ignored).
"$venv/bin/python" -m compileall -q -j 0 --invalidation-mode checked-hash "$venv/lib" >/dev/null
