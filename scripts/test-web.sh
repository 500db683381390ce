#!/usr/bin/env bash
# The web app's checks: type check and lint, unit tests with coverage (the seed's
# `npm test -- --coverage`), the production build, then the browser tests in headless Chromium
# against the real local stack (moto, the local runner serving the build, the federation gateway,
# an OpenAI-compatible server). Needs moto running (scripts/test starts it) and the runner built.
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_COLOR=1
npm ci --prefix frontend --no-audit --no-fund --loglevel=error
[[ -d infra/gateway/node_modules/@apollo/gateway ]] || npm ci --prefix infra/gateway --no-audit --no-fund --loglevel=error
cd frontend
echo "-- type check and lint"
npm run --silent typecheck
npm run --silent lint
echo "-- unit tests: npm test -- --coverage"
npm test -- --coverage
echo "-- npm run build"
npm run --silent build
cd ..
export CHROMIUM_PATH="${CHROMIUM_PATH:-$(command -v chromium || command -v chromium-browser || true)}"
if [[ -z "$CHROMIUM_PATH" ]]; then
  echo "test-web: Chromium is required for the browser tests (Debian: apt-get install chromium)" >&2
  exit 1
fi
echo "-- browser tests (Playwright with $("$CHROMIUM_PATH" --version))"
# scripts/test passes the runner its cargo test run just built; alone, build it here.
if [[ -z "${WFE_LOCAL_BIN:-}" ]]; then
  cargo build --quiet --locked -p wfe-local --bin wfe-local
  export WFE_LOCAL_BIN="$PWD/target/debug/wfe-local"
fi
# A stack and tenant of its own, so it never meets another run's data on a shared moto, and free
# ports, so two runs on one machine do not collide.
suffix="$(date +%s)-$RANDOM"
export E2E_STACK="wfe-web-$suffix" E2E_TENANT="web-$suffix"
read -r E2E_API_PORT E2E_GATEWAY_PORT E2E_WEB_PORT E2E_OPENAI_PORT E2E_MCP_PORT < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
for s in socks: s.close()')
export E2E_API_PORT E2E_GATEWAY_PORT E2E_WEB_PORT E2E_OPENAI_PORT E2E_MCP_PORT
export E2E_PASSWORD="$(head -c 18 /dev/urandom | base64 | tr -d '/+=')-Aa1"
(cd frontend && npx playwright test)
