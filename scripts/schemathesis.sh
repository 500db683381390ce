#!/usr/bin/env bash
# Schemathesis (property-based API tests, https://schemathesis.readthedocs.io) against the served
# OpenAPI document (infra/openapi.json at /openapi.json), as a tenant admin with a real token.
#
#   scripts/schemathesis.sh              start wfe-local on a free port (moto on MOTO_PORT, started
#                                        if nothing answers there), test it, stop what it started
#   scripts/schemathesis.sh BASE_URL     test a runner that is already up (e.g. scripts/start's
#                                        http://127.0.0.1:8080); its admin is created through
#                                        `auth create-admin` on the local stack (AWS_ENDPOINT_URL,
#                                        STACK_NAME), unless WFE_TOKEN gives an admin's token
#
# Each run creates a fresh tenant `st-<random>` with its admin (the token's user), a second user
# (the only target of PATCH /auth/users/{username}: any change to a user revokes their tokens, so
# the fuzzer must never PATCH the admin), and a workflow with a running execution waiting on an
# approval (the ids the workflow and execution operations are tested with).
#
# Exits non-zero on any failed check: a 5xx (not_a_server_error), a status code, content type,
# header or body the document does not describe. Deterministic: derandomized generation, no
# example database, no crash cache, a fresh stack (the stateful phase still picks some link
# values at random, so a run can differ from the last in a stateful failure). About 1-2 minutes
# on 2 cores. Reports (JUnit, NDJSON, the runner's log) in ST_REPORT_DIR; the failures' curl
# lines carry the run's throwaway admin token.
#
# Environment:
#   ST_VERSION        schemathesis version, installed into .local/schemathesis-venv (4.32.5)
#   ST_MAX_EXAMPLES   test cases per operation and phase (25)
#   ST_CHECKS         checks that fail the run (not_a_server_error, status_code_conformance,
#                     content_type_conformance, response_headers_conformance,
#                     response_schema_conformance); `all` adds positive/negative data
#                     acceptance, ignored_auth, use_after_free, ...
#   ST_PHASES         examples,coverage,fuzzing,stateful
#   ST_WORKERS        concurrent workers (2)
#   ST_SEED           Hypothesis seed (20261130); used only with ST_DETERMINISTIC=0
#   ST_DETERMINISTIC  1: derandomized generation, the same cases every run (default); 0: random
#   ST_REPORT_DIR     .local/schemathesis
#   ST_NO_BUILD=1     do not `cargo build` the binaries (use what is in target/debug)
#   STACK_NAME        without BASE_URL: the runner's stack (default st-<random>, its tables
#                     deleted at the end unless ST_KEEP_STACK=1); with BASE_URL: the stack the
#                     admin is created in (wfe-local)
#   WFE_TOKEN         with BASE_URL: an admin's access token to use instead of creating one
#   any further arguments after BASE_URL (or after `--` without one) go to `schemathesis run`
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

ST_VERSION="${ST_VERSION:-4.32.5}"
ST_MAX_EXAMPLES="${ST_MAX_EXAMPLES:-25}"
ST_CHECKS="${ST_CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance}"
ST_PHASES="${ST_PHASES:-examples,coverage,fuzzing,stateful}"
ST_WORKERS="${ST_WORKERS:-2}"
ST_SEED="${ST_SEED:-20261130}"
ST_REPORT_DIR="${ST_REPORT_DIR:-$ROOT/.local/schemathesis}"
[[ "$ST_REPORT_DIR" == /* ]] || ST_REPORT_DIR="$ROOT/$ST_REPORT_DIR"
VENV="$ROOT/.local/schemathesis-venv"

BASE=""
if [[ $# -gt 0 && "$1" != -* ]]; then BASE="${1%/}"; shift; fi
[[ "${1:-}" == "--" ]] && shift
EXTRA_ARGS=("$@")

export MOTO_PORT="${MOTO_PORT:-4566}"
export AWS_ENDPOINT_URL="${AWS_ENDPOINT_URL:-http://127.0.0.1:$MOTO_PORT}"
export AWS_REGION="${AWS_REGION:-us-east-1}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-local}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-local}"

mkdir -p "$ST_REPORT_DIR"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/wfe-schemathesis.XXXXXX")"
RUNNER_PID=""
STOP_MOTO=""
DROP_STACK=""
cleanup() {
  local rc=$?
  if [[ -n "$RUNNER_PID" ]] && kill -0 "$RUNNER_PID" 2>/dev/null; then
    kill "$RUNNER_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$RUNNER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$RUNNER_PID" 2>/dev/null || true
  fi
  [[ -n "$DROP_STACK" && -z "$STOP_MOTO" && "${ST_KEEP_STACK:-}" != 1 ]] && drop_stack "$DROP_STACK" || true
  [[ -n "$STOP_MOTO" ]] && scripts/local-stack.sh stop || true
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { echo "schemathesis: $*" >&2; }
# drop_stack NAME: deletes the local stack's tables NAME-* (moto takes any signature).
drop_stack() {
  python3 - "$AWS_ENDPOINT_URL" "$1" <<'PY' || true
import json, sys, urllib.request
endpoint, stack = sys.argv[1], sys.argv[2]
def call(target, body):
    request = urllib.request.Request(endpoint, data=json.dumps(body).encode(), headers={
        "Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "DynamoDB_20120810." + target,
        "Authorization": "AWS4-HMAC-SHA256 Credential=local/20000101/us-east-1/dynamodb/aws4_request, "
                         "SignedHeaders=host, Signature=0"})
    return json.loads(urllib.request.urlopen(request, timeout=30).read() or b"{}")
names, start = [], None
while True:
    page = call("ListTables", {"ExclusiveStartTableName": start} if start else {})
    names += page.get("TableNames", [])
    start = page.get("LastEvaluatedTableName")
    if not start:
        break
for name in names:
    if name.startswith(stack + "-"):
        call("DeleteTable", {"TableName": name})
PY
}
die() { say "$*"; exit 1; }

# --- schemathesis, pinned, in its own virtualenv ------------------------------------------------
if [[ "$("$VENV/bin/schemathesis" --version 2>/dev/null || true)" != *" $ST_VERSION" ]]; then
  say "installing schemathesis==$ST_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$ST_VERSION"
fi
PY="$VENV/bin/python"

# --- the API under test --------------------------------------------------------------------------
RUN_ID="$("$PY" -c 'import secrets; print(secrets.token_hex(4))')"
TENANT="st-$RUN_ID"
ADMIN="st-$RUN_ID-admin"
ADMIN_PW="$("$PY" -c 'import secrets; print(secrets.token_urlsafe(18))')"

if [[ -z "$BASE" ]]; then
  # A stack of its own (tables and streams), dropped at the end: nothing another run or a
  # developer left in the shared one (a stuck stream, thousands of executions) can change this
  # run's results, and nothing this run writes stays behind.
  if [[ -z "${STACK_NAME:-}" ]]; then
    export STACK_NAME="st-$RUN_ID"
    DROP_STACK="$STACK_NAME"
  fi
  if ! scripts/local-stack.sh status >/dev/null 2>&1; then
    scripts/local-stack.sh start >&2
    STOP_MOTO=1
  fi
  [[ "${ST_NO_BUILD:-}" == 1 ]] || cargo build --quiet -p wfe-local
  [[ -x target/debug/wfe-local ]] || die "target/debug/wfe-local is missing (cargo build -p wfe-local)"
  PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  BASE="http://127.0.0.1:$PORT"
  say "starting wfe-local on $BASE (log: $ST_REPORT_DIR/wfe-local.log)"
  # The fuzzer sends thousands of requests a minute: lift the per-user rate limit, and keep
  # calls to the (unreachable) MCP servers it registers short.
  HOST=127.0.0.1 PORT="$PORT" AUTO_MIGRATE=true TIMER_PERIOD_MS=1000 \
    RATE_LIMIT_REQUESTS="${RATE_LIMIT_REQUESTS:-1000000}" MCP_TIMEOUT="${MCP_TIMEOUT:-5}" \
    HTTP_STEP_TIMEOUT="${HTTP_STEP_TIMEOUT:-5}" RUST_LOG="${RUST_LOG:-info}" \
    ADMIN_USERNAME="$ADMIN" ADMIN_PASSWORD="$ADMIN_PW" ADMIN_TENANT="$TENANT" \
    target/debug/wfe-local up >"$ST_REPORT_DIR/wfe-local.log" 2>&1 &
  RUNNER_PID=$!
  for _ in $(seq 1 600); do
    curl -fsS -m 2 "$BASE/health" >/dev/null 2>&1 && break
    kill -0 "$RUNNER_PID" 2>/dev/null || { tail -20 "$ST_REPORT_DIR/wfe-local.log" >&2; die "wfe-local exited during start-up"; }
    sleep 0.2
  done
  curl -fsS -m 2 "$BASE/health" >/dev/null || die "wfe-local did not answer on $BASE within 120 s"
elif [[ -z "${WFE_TOKEN:-}" ]]; then
  export STACK_NAME="${STACK_NAME:-wfe-local}"
  [[ "${ST_NO_BUILD:-}" == 1 ]] || cargo build --quiet -p wfe-local -p auth
  say "creating admin $ADMIN in tenant $TENANT on stack $STACK_NAME ($AWS_ENDPOINT_URL)"
  (
    eval "$(target/debug/wfe-local env)"
    ADMIN_PASSWORD="$ADMIN_PW" target/debug/auth create-admin --username "$ADMIN" --tenant "$TENANT"
  ) >&2
fi
curl -fsS -m 10 "$BASE/openapi.json" >/dev/null || die "$BASE/openapi.json does not answer"

# --- a token and the data the operations need ----------------------------------------------------
# api METHOD PATH [JSON]: prints the body, fails on a status other than 2xx.
api() {
  local out status args=()
  [[ -n "$TOKEN" ]] && args+=(-H "authorization: Bearer $TOKEN")
  [[ $# -ge 3 ]] && args+=(-H 'content-type: application/json' --data-binary "$3")
  out="$(curl -sS -m 30 -X "$1" "$BASE$2" "${args[@]}" -w '\n%{http_code}')"
  status="${out##*$'\n'}"
  [[ "$status" == 2* ]] || die "$1 $2 answered $status: ${out%$'\n'*}"
  printf '%s' "${out%$'\n'*}"
}
# json_get FIELD: FIELD of the JSON document on stdin (nothing, and a failure, when the request
# before it already failed).
json_get() {
  "$PY" -c 'import json, sys
text = sys.stdin.read()
sys.exit(1) if not text else print(json.loads(text)[sys.argv[1]])' "$1"
}

if [[ -n "${WFE_TOKEN:-}" ]]; then
  TOKEN="$WFE_TOKEN"
  TENANT="$(api GET /auth/me | json_get tenant)"
else
  LOGIN="$("$PY" -c 'import json, sys; print(json.dumps(dict(zip(["username", "password", "tenant"], sys.argv[1:]))))' "$ADMIN" "$ADMIN_PW" "$TENANT")"
  TOKEN=""
  TOKEN="$(api POST /auth/login "$LOGIN" | json_get access_token)"
fi
VICTIM="st-$RUN_ID-user"
api POST /auth/users "{\"username\": \"$VICTIM\", \"password\": \"$ADMIN_PW\", \"roles\": [\"user\"]}" >/dev/null
# new_workflow ID: a workflow whose one step waits for an approval
new_workflow() {
  api POST /workflows "{\"id\": \"$1\", \"name\": \"schemathesis $1\", \"start\": \"ask\",
    \"steps\": {\"ask\": {\"type\": \"approval\", \"next\": \"done\"}, \"done\": {\"type\": \"succeed\"}}}" >/dev/null
}
start() { api POST "/workflows/$1/executions" '{"input": {}}' | json_get execution_id; }
WORKFLOW="st-$RUN_ID-wf"
new_workflow "$WORKFLOW"
new_workflow "$WORKFLOW-archive"
api POST /workflows "{\"id\": \"$WORKFLOW-fails\", \"name\": \"schemathesis fails\", \"start\": \"f\",
  \"steps\": {\"f\": {\"type\": \"fail\", \"error\": \"Seeded\"}}}" >/dev/null
export ST_VICTIM="$VICTIM" ST_WORKFLOW="$WORKFLOW" ST_WORKFLOW_ARCHIVE="$WORKFLOW-archive"
ST_EXECUTION="$(start "$WORKFLOW")"
ST_EXECUTION_CANCEL="$(start "$WORKFLOW")"
ST_EXECUTION_APPROVE="$(start "$WORKFLOW")"
ST_EXECUTION_FAILED="$(start "$WORKFLOW-fails")"
export ST_EXECUTION ST_EXECUTION_CANCEL ST_EXECUTION_APPROVE ST_EXECUTION_FAILED
say "tenant $TENANT: workflow $WORKFLOW, execution $ST_EXECUTION"

# Fixed ids for the operations on one workflow or execution (nothing in the document links them
# to the operations that create them), and the non-admin user as the only PATCH target.
cat >"$WORK/schemathesis.toml" <<'EOF'
# No state across runs (replayed crashes would make runs differ), nothing written to the tree.
[cache]
enabled = false

[[operations]]
include-name = "PATCH /auth/users/{username}"
parameters = { "path.username" = "${ST_VICTIM}" }

[[operations]]
include-name = ["GET /workflows/{id}", "PUT /workflows/{id}", "GET /workflows/{id}/versions/{version}",
  "POST /workflows/{id}/executions", "GET /budgets/workflows/{id}", "PUT /budgets/workflows/{id}"]
parameters = { "path.id" = "${ST_WORKFLOW}" }

[[operations]]
include-name = ["DELETE /workflows/{id}", "POST /workflows/{id}/restore"]
parameters = { "path.id" = "${ST_WORKFLOW_ARCHIVE}" }

[[operations]]
include-name = ["GET /executions/{id}", "GET /executions/{id}/events"]
parameters = { "path.id" = "${ST_EXECUTION}" }

[[operations]]
include-name = "POST /executions/{id}/cancel"
parameters = { "path.id" = "${ST_EXECUTION_CANCEL}" }

[[operations]]
include-name = "POST /executions/{id}/approvals/{step}"
parameters = { "path.id" = "${ST_EXECUTION_APPROVE}", "path.step" = "ask" }

[[operations]]
include-name = "POST /executions/{id}/redrive"
parameters = { "path.id" = "${ST_EXECUTION_FAILED}" }
EOF

# --- the run -------------------------------------------------------------------------------------
say "schemathesis $ST_VERSION against $BASE/openapi.json (checks: $ST_CHECKS; phases: $ST_PHASES)"
STARTED=$SECONDS
# The failures' curl lines show real values (schemathesis would mask `monthly_tokens`, `token`,
# ...) and the throwaway admin's token; a token passed in WFE_TOKEN stays masked.
SANITIZE=false
[[ -n "${WFE_TOKEN:-}" ]] && SANITIZE=true
DETERMINISTIC=(--generation-deterministic)
[[ "${ST_DETERMINISTIC:-1}" == 0 ]] && DETERMINISTIC=()
set +e
(cd "$WORK" && exec "$VENV/bin/schemathesis" --config-file "$WORK/schemathesis.toml" --no-color run "$BASE/openapi.json" \
  --url "$BASE" \
  -H "Authorization: Bearer $TOKEN" \
  --checks "$ST_CHECKS" \
  --phases "$ST_PHASES" \
  --max-examples "$ST_MAX_EXAMPLES" \
  --seed "$ST_SEED" "${DETERMINISTIC[@]}" \
  --workers "$ST_WORKERS" \
  --request-timeout 30 \
  --suppress-health-check all \
  --report junit,ndjson --report-dir "$ST_REPORT_DIR" \
  --output-sanitize "$SANITIZE" \
  "${EXTRA_ARGS[@]}")
RC=$?
set -e
say "finished in $((SECONDS - STARTED)) s with exit code $RC (reports in $ST_REPORT_DIR)"
exit "$RC"
