#!/usr/bin/env bash
# Runs the whole llmops test suite on a fresh machine.
#
# It starts the services the tests talk to (PostgreSQL, Redis) when they are down, installs the
# external tools some tests drive (the OpenAI Python SDK, MLflow, promtool) when they are
# missing, then runs every test of every crate with all features, doc tests included.
#
# Overrides: LLMOPS_TEST_REDIS_URL, LLMOPS_TEST_PG_URL, LLMOPS_TEST_PYTHON,
# LLMOPS_TEST_MLFLOW_PYTHON, LLMOPS_TEST_PROMTOOL, LLMOPS_TEST_XMLLINT. Extra arguments go to `cargo nextest run`
# (e.g. `bash tools/test.sh -p llmops-core`).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*" >&2; }

# --- services -------------------------------------------------------------------------
if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then
    say "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
if command -v redis-cli >/dev/null 2>&1 && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    say "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no || true
fi

# --- external tools -------------------------------------------------------------------
python="${LLMOPS_TEST_PYTHON:-python3}"
if ! "$python" -c 'import openai' >/dev/null 2>&1; then
    say "installing the OpenAI Python SDK (pip install openai)"
    "$python" -m pip install --quiet --disable-pip-version-check openai >&2
fi
export LLMOPS_TEST_PYTHON="$python"

if [ -f tools/mlflow-ci.sh ] && [ -z "${LLMOPS_TEST_MLFLOW_PYTHON:-}" ]; then
    say "preparing MLflow"
    LLMOPS_TEST_MLFLOW_PYTHON="$(bash tools/mlflow-ci.sh)"
    export LLMOPS_TEST_MLFLOW_PYTHON
fi

if [ -z "${LLMOPS_TEST_XMLLINT:-}" ] && ! command -v xmllint >/dev/null 2>&1; then
    say "installing xmllint (Debian package libxml2-utils)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libxml2-utils) >&2 || true
fi

if [ -z "${LLMOPS_TEST_PROMTOOL:-}" ]; then
    if ! command -v promtool >/dev/null 2>&1; then
        say "installing promtool (Debian package prometheus)"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus) >&2 || true
    fi
    if command -v promtool >/dev/null 2>&1; then
        LLMOPS_TEST_PROMTOOL="$(command -v promtool)"
        export LLMOPS_TEST_PROMTOOL
    fi
fi

# --- tests ----------------------------------------------------------------------------
say "cargo nextest run --workspace --all-features"
cargo nextest run --workspace --all-features --no-fail-fast "$@"
say "cargo test --doc --workspace --all-features"
cargo test --doc --workspace --all-features
