#!/usr/bin/env bash
# Chart tests: renders and lints helm/dsr-orchestrator with Helm's own Go code
# (helm-python-sdk), validates every manifest against the Kubernetes schemas
# (kubernetes-validate) and checks the values Helm must refuse. Installs its
# Python dependencies into a venv kept in a cache directory, one venv per
# content of requirements.txt, so work trees on different requirements
# neither rebuild nor remove each other's venv. Exits non-zero on any
# failure.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${DSR_HELM_TESTS_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/dsr-orchestrator/helm-tests}"
requirements="$here/requirements.txt"
want="$(sha256sum "$requirements" | cut -d' ' -f1)"
venv="$cache/venv-${want:0:16}"

if [[ ! -x "$venv/bin/python" || "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$want" ]]; then
    echo "== installing the chart tests' Python dependencies into $venv"
    rm -rf "$venv"
    mkdir -p "$cache"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$requirements"
    echo "$want" > "$venv/.requirements.sha256"
fi

echo "== helm chart tests (helm/tests)"
cd "$here"
# No bytecode or pytest cache left in the work tree.
export PYTHONDONTWRITEBYTECODE=1
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider -rfEs "$here"
