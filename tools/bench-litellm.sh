#!/usr/bin/env bash
# Side-by-side load comparison of `llmops serve` and LiteLLM's proxy on this machine, with the
# do-nothing pass-through built from the gateway's HTTP stack as the floor: the same
# canned OpenAI-compatible upstream, the same open-loop client (`llmops-loadgen compare`), the
# same rates. Installs a pinned LiteLLM into a virtualenv, starts the upstream and the proxy
# (offline, no database, 2 workers, quiet logs), and writes the table and its summary to
# ${CARGO_TARGET_DIR:-target}/bench/litellm.md (raw results: litellm.json, proxy log:
# litellm-proxy.log).
#
# Usage: bash tools/bench-litellm.sh [RATES] [SECONDS] [MODES]
#        (default: 50,100,200,500,1000,2000 10 json; MODES may be json,stream)
set -euo pipefail
cd "$(dirname "$0")/.."

rates="${1:-50,100,200,500,1000,2000}"
secs="${2:-10}"
modes="${3:-json}"
litellm_version="1.108.7"
litellm_workers=2
ready_timeout=300

target="${CARGO_TARGET_DIR:-target}"
bin="$target/release"
out="$target/bench"
venv="$target/litellm-venv"
mkdir -p "$out"
work="$(mktemp -d)"

# Every child runs in its own process group (setsid), so that the proxy's workers go with it.
groups=()
cleanup() {
  local pgid
  for pgid in "${groups[@]}"; do
    kill -TERM -- "-$pgid" 2>/dev/null || true
  done
  for _ in $(seq 50); do
    local alive=0
    for pgid in "${groups[@]}"; do
      if kill -0 -- "-$pgid" 2>/dev/null; then alive=1; fi
    done
    [[ $alive == 0 ]] && break
    sleep 0.1
  done
  for pgid in "${groups[@]}"; do
    kill -KILL -- "-$pgid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cargo build --release -p llmops-cli -p llmops-loadgen >&2

# LiteLLM, pinned, in its own virtualenv (reused when the pinned version is already there).
installed_version() {
  "$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))' \
    2>/dev/null || true
}
if [[ "$(installed_version)" != "$litellm_version" ]]; then
  echo "installing litellm[proxy]==$litellm_version into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "litellm[proxy]==$litellm_version" >&2
fi
version="$(installed_version)"
if [[ "$version" != "$litellm_version" ]]; then
  echo "error: expected litellm $litellm_version in $venv, found '${version}'" >&2
  exit 1
fi

# Prints the base URL that a background child (pid $1) reports on its stderr log ($2) in a
# line matching the sed expression $3; fails naming it ($4) if it exits or stays silent.
reported_url() {
  local pid="$1" log="$2" expr="$3" what="$4" url=""
  for _ in $(seq 100); do
    url="$(sed -n "$expr" "$log")"
    [[ -n "$url" ]] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if [[ -z "$url" ]]; then
    echo "error: $what did not start:" >&2
    cat "$log" >&2
    return 1
  fi
  echo "$url"
}

# The canned upstream, on a free port it reports on stderr.
setsid "$bin/llmops-loadgen" upstream --listen 127.0.0.1:0 2>"$work/upstream.log" &
upstream_pid=$!
groups+=("$upstream_pid")
upstream="$(reported_url "$upstream_pid" "$work/upstream.log" \
  's|^canned upstream on \(http://[^ ]*\)$|\1|p' "the canned upstream")"

# The floor: the gateway's own HTTP server and client with nothing between them.
setsid "$bin/llmops-loadgen" passthrough --listen 127.0.0.1:0 --upstream "$upstream" \
  2>"$work/passthrough.log" &
passthrough_pid=$!
groups+=("$passthrough_pid")
passthrough="$(reported_url "$passthrough_pid" "$work/passthrough.log" \
  's|^pass-through on \(http://[^ ]*\) in front of .*$|\1|p' "the pass-through")"

# LiteLLM's proxy: model `bench` served as `openai/bench` by the canned upstream, no database,
# a random master key, the bundled model cost map (no network), errors-only logging (which
# also turns off uvicorn's access log). Each worker re-imports litellm when it starts, which
# takes longer than uvicorn's default 5 s worker health check on a busy machine: without a
# longer one, the supervisor kills and restarts the workers forever.
port="$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cat >"$work/litellm.yaml" <<EOF
model_list:
  - model_name: bench
    litellm_params:
      model: openai/bench
      api_base: $upstream
      api_key: unused
litellm_settings:
  set_verbose: false
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
EOF
LITELLM_MASTER_KEY="sk-$("$venv/bin/python" -c 'import secrets; print(secrets.token_hex(32))')"
export LITELLM_MASTER_KEY
proxy_log="$out/litellm-proxy.log"
env -u DATABASE_URL \
  LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR LITELLM_MODE=PRODUCTION \
  LITELLM_DONT_SHOW_FEEDBACK_BOX=true \
  setsid "$venv/bin/litellm" --config "$work/litellm.yaml" --host 127.0.0.1 --port "$port" \
  --num_workers "$litellm_workers" --timeout_worker_healthcheck 120 >"$proxy_log" 2>&1 &
litellm_pid=$!
groups+=("$litellm_pid")
echo "waiting for LiteLLM's proxy on 127.0.0.1:$port (up to ${ready_timeout} s)" >&2
deadline=$((SECONDS + ready_timeout))
until curl -fsS -o /dev/null "http://127.0.0.1:$port/health/liveliness" 2>/dev/null; do
  if ! kill -0 "$litellm_pid" 2>/dev/null; then
    echo "error: LiteLLM's proxy exited before it was ready; its log ($proxy_log):" >&2
    tail -n 40 "$proxy_log" >&2
    exit 1
  fi
  if ((SECONDS >= deadline)); then
    echo "error: LiteLLM's proxy was not ready after ${ready_timeout} s; its log ($proxy_log):" >&2
    tail -n 40 "$proxy_log" >&2
    exit 1
  fi
  sleep 0.5
done

# The harness runs in its own process group too: it starts `llmops serve` itself, which an
# interrupted run must not leave behind.
setsid "$bin/llmops-loadgen" compare --upstream "$upstream" --upstream-pid "$upstream_pid" \
  --llmops "$bin/llmops" \
  --gateway "name=passthrough,url=$passthrough,pid=$passthrough_pid" \
  --gateway "name=litellm,url=http://127.0.0.1:$port/v1,pid=$litellm_pid,key-env=LITELLM_MASTER_KEY" \
  --rates "$rates" --duration "$secs" --modes "$modes" --json "$out/litellm.json" \
  >"$work/table.md" &
compare_pid=$!
groups+=("$compare_pid")
wait "$compare_pid"
{
  echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(date -u +%F), commit $(git rev-parse --short HEAD)"
  echo "LiteLLM $version (litellm[proxy], uvicorn, $litellm_workers workers, no database, LITELLM_LOG=ERROR); llmops serve with the default pipeline; passthrough: the gateway's HTTP server and client with nothing between them (\`llmops-loadgen passthrough\`); one canned upstream; rates $rates req/s, ${secs} s per cell, modes $modes"
  echo
  cat "$work/table.md"
} | tee "$out/litellm.md"
echo "wrote $out/litellm.md" >&2
