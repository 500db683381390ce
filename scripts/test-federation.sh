#!/usr/bin/env bash
# Federation checks (the seed's `./scripts/test-federation.sh`):
#   1. the committed SDL (infra/graphql/schema.graphql) is what the graphql function prints;
#   2. it composes, with Apollo's own composition library, beside a second subgraph that extends
#      `Workflow` and `User`, with no error and no hint that matters;
#   3. a subgraph that contradicts ours fails composition (the check can fail).
# The gateway end-to-end tests (queries across both subgraphs, auth forwarding, limits, health)
# run with the other e2e tests: `cargo test -p wfe-local --test e2e -- federation`.
set -euo pipefail
cd "$(dirname "$0")/.."
GATEWAY=infra/gateway
if [[ ! -d "$GATEWAY/node_modules/@apollo/composition" ]]; then
  npm ci --prefix "$GATEWAY" --no-audit --no-fund --loglevel=error
fi

echo "== the committed SDL is current"
cargo run --quiet --locked -p graphql -- --print-sdl | diff -u infra/graphql/schema.graphql - \
  || { echo "infra/graphql/schema.graphql is stale: cargo run -q -p graphql -- --print-sdl > infra/graphql/schema.graphql"; exit 1; }

echo "== composition: engine + notes"
node "$GATEWAY/src/compose.mjs" \
  "engine=http://127.0.0.1:8080/graphql=infra/graphql/schema.graphql" \
  "notes=http://127.0.0.1:4001/graphql=$GATEWAY/test/notes.graphql"

echo "== composition refuses a subgraph that contradicts ours"
conflict="$(mktemp)"
trap 'rm -f "$conflict"' EXIT
cat > "$conflict" <<'SDL'
extend schema @link(url: "https://specs.apollo.dev/federation/v2.5", import: ["@key"])
type Workflow @key(fields: "id") { id: ID! name: Int! }
SDL
if out="$(node "$GATEWAY/src/compose.mjs" \
    "engine=http://127.0.0.1:8080/graphql=infra/graphql/schema.graphql" \
    "rogue=http://127.0.0.1:4002/graphql=$conflict" 2>&1)"; then
  echo "composition accepted a conflicting subgraph:"; echo "$out"; exit 1
fi
echo "$out" | grep -q 'INVALID_FIELD_SHARING\|FIELD_TYPE_MISMATCH' \
  || { echo "unexpected composition failure:"; echo "$out"; exit 1; }
echo "refused as expected: $(echo "$out" | sed -n 2p)"
echo "== federation checks passed"
