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
echo "-- browser tests (Playwright, $(${CHROMIUM_PATH:-/usr/bin/chromium} --version 2>/dev/null || echo 'no chromium: apt-get install chromium'))"
cargo build --quiet --locked -p wfe-local --bin wfe-local
# A stack and tenant of its own, so it never meets another test's data on the shared moto.
export E2E_STACK="wfe-web-$$" E2E_TENANT="web-$$"
export E2E_PASSWORD="$(head -c 18 /dev/urandom | base64 | tr -d '/+=')-Aa1"
mkdir -p docs/screenshots
(cd frontend && npx playwright test)
