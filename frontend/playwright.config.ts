import { defineConfig, devices } from '@playwright/test'

// The browser tests run against the real local stack: moto (already running, AWS_ENDPOINT_URL),
// the local runner serving every function and the built web app, the federation gateway, and an
// OpenAI-compatible server. scripts/test-web.sh sets the ports, a unique stack and the admin.
const env = (k: string, d?: string): string => {
  const v = process.env[k] ?? d
  if (v === undefined) throw new Error(`${k} is not set: run the browser tests with scripts/test-web.sh`)
  return v
}
const apiPort = env('E2E_API_PORT', '18480')
const gatewayPort = env('E2E_GATEWAY_PORT', '18440')
const webPort = env('E2E_WEB_PORT', '18430')
const openaiPort = env('E2E_OPENAI_PORT', '18450')
const mcpPort = env('E2E_MCP_PORT', '18460')
const openaiKey = 'sk-web-test-0123456789'
const root = new URL('..', import.meta.url).pathname

export default defineConfig({
  testDir: 'e2e',
  timeout: 180_000,
  expect: { timeout: 20_000 },
  fullyParallel: false,
  workers: 1,
  forbidOnly: !!process.env.CI,
  reporter: [['list']],
  outputDir: 'test-results',
  use: {
    baseURL: `http://127.0.0.1:${webPort}`,
    trace: 'retain-on-failure',
    launchOptions: { executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium' },
  },
  projects: [{ name: 'chromium', use: { ...devices['Desktop Chrome'], viewport: { width: 1366, height: 900 } } }],
  webServer: [
    {
      command: 'node e2e/fake-openai.mjs',
      url: `http://127.0.0.1:${openaiPort}/health`,
      env: { FAKE_OPENAI_PORT: openaiPort, OPENAI_API_KEY: openaiKey },
      reuseExistingServer: false,
      stdout: 'ignore',
    },
    {
      command: 'node e2e/mcp-server.mjs',
      url: `http://127.0.0.1:${mcpPort}/health`,
      env: { MCP_PORT: mcpPort },
      reuseExistingServer: false,
      stdout: 'ignore',
    },
    {
      command: `${process.env.WFE_LOCAL_BIN ?? `${root}target/debug/wfe-local`} up`,
      url: `http://127.0.0.1:${apiPort}/health`,
      timeout: 120_000,
      reuseExistingServer: false,
      stdout: 'ignore',
      stderr: 'pipe',
      env: {
        PORT: apiPort,
        WEB_PORT: webPort,
        WEB_DIR: `${root}frontend/dist`,
        GRAPHQL_GATEWAY_URL: `http://127.0.0.1:${gatewayPort}`,
        STACK_NAME: env('E2E_STACK'),
        AUTO_MIGRATE: 'true',
        ADMIN_USERNAME: 'admin',
        ADMIN_TENANT: env('E2E_TENANT'),
        ADMIN_PASSWORD: env('E2E_PASSWORD'),
        TIMER_PERIOD_MS: '500',
        // 20-second access tokens: the journey lives through several refreshes, as a real
        // session does over hours.
        TOKEN_EXPIRATION: '20',
        OPENAI_API_KEY: openaiKey,
        OPENAI_BASE_URL: `http://127.0.0.1:${openaiPort}`,
        // The test's MCP and LLM servers are on loopback, which the engine refuses by default.
        HTTP_ALLOW_PRIVATE_NETWORKS: 'true',
        RUST_LOG: 'warn',
        METRICS: 'off',
      },
    },
    {
      command: `node ${root}infra/gateway/src/gateway.mjs`,
      url: `http://127.0.0.1:${gatewayPort}/health`,
      reuseExistingServer: false,
      stdout: 'ignore',
      env: { PORT: gatewayPort, ENGINE_GRAPHQL_URL: `http://127.0.0.1:${apiPort}/graphql` },
    },
  ],
})
