#!/usr/bin/env bash
# Installs MLflow into a virtualenv (once) and prints the path of that venv's python.
#
# Usage:
#   export LLMOPS_TEST_MLFLOW_PYTHON="$(bash tools/mlflow-ci.sh)"
#
# The venv lives in $LLMOPS_MLFLOW_VENV (default: $HOME/.cache/llmops/mlflow-venv), outside the
# work tree, so a fresh clone reuses it. When it was installed before with the same version
# range the script only prints the path (in well under a second). Everything but the final
# path goes to stderr. LLMOPS_MLFLOW_VENV moves the venv, LLMOPS_MLFLOW_SPEC changes the
# version range, PYTHON picks the interpreter that creates the venv.
set -euo pipefail

venv="${LLMOPS_MLFLOW_VENV:-${HOME:-/root}/.cache/llmops/mlflow-venv}"
spec="${LLMOPS_MLFLOW_SPEC:-mlflow>=2.14,<4}"
py="$venv/bin/python"

marker="$venv/.llmops-mlflow-spec"
# Fast path: installed before with the same spec (importing mlflow itself takes seconds).
if [ -x "$py" ] && [ "$(cat "$marker" 2>/dev/null)" = "$spec" ] \
    && "$py" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("mlflow") is None)' 2>/dev/null; then
    echo "$py"
    exit 0
fi

base_python="${PYTHON:-$(command -v python3 || true)}"
if [ -z "$base_python" ]; then
    echo "mlflow-ci: python3 not found; install it (apt-get install -y python3 python3-venv)" >&2
    exit 1
fi

echo "mlflow-ci: creating $venv with $base_python" >&2
mkdir -p "$(dirname "$venv")"
"$base_python" -m venv "$venv" >&2
"$py" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
echo "mlflow-ci: installing $spec" >&2
"$py" -m pip install --quiet --disable-pip-version-check "$spec" >&2
"$py" -c 'import mlflow; print("mlflow-ci: mlflow", mlflow.__version__)' >&2
echo "$spec" > "$marker"
echo "$py"
