import { expect, test, type Page } from '@playwright/test'

const password = process.env.E2E_PASSWORD ?? ''
const tenant = process.env.E2E_TENANT ?? ''
const mcpUrl = `http://127.0.0.1:${process.env.E2E_MCP_PORT ?? '18460'}/mcp`
// SCREENSHOTS_DIR=$PWD/docs/screenshots refreshes the README's pictures; by default they go to
// the (ignored) test output.
const shots = `${process.env.SCREENSHOTS_DIR ?? new URL('../test-results/screenshots', import.meta.url).pathname}/`

// The definition the test types: `next: reviw` (line 17) names no step.
const broken = `name: Greeting with approval
description: Drafts a greeting with an LLM, then waits for a person.
input_schema:
  type: object
  required: [who]
  properties:
    who:
      type: string
      description: Who to greet
start: draft
steps:
  draft:
    type: llm
    provider: openai
    model: gpt-4o-mini
    prompt: "Write a greeting for {{ input.who }}"
    next: reviw
  review:
    type: approval
    prompt: Send it?
outputs:
  greeting: "{{ steps.draft.output.text }}"
`

async function login(page: Page) {
  await page.goto('/')
  await expect(page.getByRole('heading', { name: 'Sign in' })).toBeVisible()
  await page.getByLabel('User name').fill('admin')
  await page.getByLabel('Password').fill(password)
  await page.getByLabel('Tenant').fill(tenant)
  await page.getByRole('button', { name: 'Sign in' }).click()
  await expect(page.getByRole('heading', { name: 'Workflows', level: 1 })).toBeVisible()
}

test('author, run, approve, pay and sign out', async ({ page }) => {
  await login(page)
  const firstRefresh = await page.evaluate(() => localStorage.getItem('refresh_token'))
  await expect(page.getByText('No workflows yet')).toBeVisible()
  await page.screenshot({ path: `${shots}workflows-empty.png` })

  // Create from YAML: the validation error is shown on its line before anything is saved.
  await page.getByRole('link', { name: 'New workflow' }).click()
  const editor = page.getByLabel('Definition', { exact: true })
  await editor.fill(broken)
  const problems = page.getByRole('list', { name: 'Problems' })
  await expect(problems).toContainText('Line 17')
  await expect(problems).toContainText('/steps/draft/next')
  await expect(page.locator('.gutter [data-line="17"]')).toHaveAttribute('data-problem', 'true')
  await expect(page.getByRole('button', { name: 'Create workflow' })).toBeDisabled()
  await page.screenshot({ path: `${shots}editor-validation.png` })

  await editor.fill(broken.replace('next: reviw', 'next: review'))
  await expect(page.getByRole('status').filter({ hasText: 'Valid' })).toBeVisible()
  await page.getByRole('button', { name: 'Create workflow' }).click()
  await expect(page.getByRole('heading', { name: /Greeting with approval/ })).toBeVisible()
  await expect(page.getByRole('group', { name: 'Workflow graph' }).getByLabel(/^review, approval step/)).toBeVisible()
  await page.screenshot({ path: `${shots}workflow.png`, fullPage: true })

  // Start it from the form generated from its input schema.
  await page.getByRole('link', { name: 'Run', exact: true }).click()
  await page.getByLabel('who').fill('Ada')
  await page.screenshot({ path: `${shots}run.png` })
  await page.getByRole('button', { name: 'Start execution' }).click()

  // Watch it reach the approval, approve it, and watch it finish.
  await expect(page.getByRole('region', { name: 'Waiting for approval' })).toBeVisible({ timeout: 60_000 })
  const graph = page.getByRole('group', { name: 'Workflow graph' })
  await expect(graph.locator('[data-step="draft"]')).toHaveAttribute('data-state', 'SUCCEEDED')
  await expect(graph.locator('[data-step="review"]')).toHaveAttribute('data-state', 'AWAITING_APPROVAL')
  await page.screenshot({ path: `${shots}execution-awaiting-approval.png`, fullPage: true })
  await page.getByRole('button', { name: 'Approve review' }).click()
  await expect(page.getByRole('heading', { level: 1 }).getByText('succeeded')).toBeVisible({ timeout: 60_000 })
  await expect(graph.locator('[data-step="review"]')).toHaveAttribute('data-state', 'SUCCEEDED')

  // Its cost: 1,200 + 800 tokens of gpt-4o-mini, priced by the engine.
  const cost = page.getByTestId('execution-cost')
  await expect(cost).not.toHaveText('$0')
  await expect(cost).toHaveText(/^\$0\.\d+$/)
  await expect(page.getByRole('list', { name: 'Event history' })).toContainText('ApprovalGranted')
  await page.getByRole('button', { name: 'draft' }).first().click()
  await expect(page.getByRole('region', { name: 'Step draft' })).toContainText('Hello! (Write a greeting for Ada)')
  await page.screenshot({ path: `${shots}execution.png`, fullPage: true })

  await page.getByRole('link', { name: 'Executions' }).click()
  await expect(page.getByRole('table')).toContainText('succeeded')
  await page.screenshot({ path: `${shots}executions.png` })

  await page.getByRole('link', { name: 'Costs' }).click()
  await expect(page.getByTestId('usage-total')).not.toHaveText('$0')
  await expect(page.getByRole('list', { name: 'By model' })).toContainText('openai/gpt-4o-mini')
  // A monthly limit of $0.001: the month already spent $0.00066, past the 50 % alert.
  await page.getByLabel('Dollar limit').fill('0.001')
  await page.getByRole('button', { name: 'Save limits' }).click()
  await expect(page.getByRole('list', { name: 'Alert thresholds' })).toContainText('50 % ($0.000500) reached')
  await expect(page.getByRole('list', { name: 'Alert thresholds' })).not.toContainText('80 % ($0.000800) reached')
  await page.screenshot({ path: `${shots}costs.png`, fullPage: true })

  // Admin: add an approver through the form; the list shows them with their role.
  await page.getByRole('link', { name: 'Admin' }).click()
  await expect(page.getByRole('table').first()).toContainText('admin')
  await page.getByLabel('User name').fill('grace')
  await page.getByLabel(/^Password/).fill('approver-password-42')
  await page.getByLabel(/^Roles \(comma/).fill('approver')
  await page.getByRole('button', { name: 'Add user' }).click()
  await expect(page.getByLabel('Roles of grace')).toHaveValue('approver')
  await page.screenshot({ path: `${shots}admin.png` })

  // Register an MCP server (a real one, the official SDK) and see the tools the engine finds.
  await page.getByRole('tab', { name: 'MCP servers' }).click()
  await expect(page.getByText('No MCP servers yet')).toBeVisible()
  await page.getByLabel('Name', { exact: true }).fill('tools')
  await page.getByLabel(/^URL/).fill(mcpUrl)
  await page.getByLabel('Description').fill('test tools')
  await page.getByRole('button', { name: 'Register' }).click()
  await expect(page.getByRole('button', { name: 'Remove tools' })).toBeVisible()
  await page.getByRole('button', { name: 'Show their tools' }).click()
  const tools = page.getByRole('list', { name: 'Tools of tools' })
  await expect(tools).toContainText('add')
  await expect(tools).toContainText('Says it louder')
  await page.screenshot({ path: `${shots}admin-mcp.png` })

  // On a phone: nothing wider than the screen, the navigation still there.
  await page.setViewportSize({ width: 390, height: 844 })
  await page.getByRole('link', { name: 'Executions' }).click()
  await expect(page.getByRole('table')).toContainText('succeeded')
  expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390)
  await page.screenshot({ path: `${shots}phone-executions.png` })
  await page.setViewportSize({ width: 1366, height: 900 })

  // The 20-second access token was refreshed ahead of expiry, on the page's own timer, and
  // the session went on (the server rotates the refresh token each time).
  await expect.poll(() => page.evaluate(() => localStorage.getItem('refresh_token')), { timeout: 30_000 }).not.toBe(firstRefresh)
  await page.getByRole('link', { name: 'Workflows' }).click()
  await expect(page.getByRole('table')).toContainText('Greeting with approval')

  // Log out: the tokens are gone from storage, the server revoked them, and the app asks to sign in.
  const refreshToken = await page.evaluate(() => localStorage.getItem('refresh_token'))
  expect(refreshToken).not.toBeNull()
  await page.getByRole('button', { name: 'Log out' }).click()
  await expect(page.getByRole('heading', { name: 'Sign in' })).toBeVisible()
  expect(await page.evaluate(() => [localStorage.getItem('auth_token'), localStorage.getItem('refresh_token')])).toEqual([null, null])
  await expect
    .poll(async () => (await page.request.post('/api/auth/refresh', { data: { refresh_token: refreshToken } })).status())
    .toBe(401)
  await page.goto('/executions')
  await expect(page.getByRole('heading', { name: 'Sign in' })).toBeVisible()
})

test('a token that does not validate is cleared and the user signs in again', async ({ page }) => {
  await page.goto('/login')
  await page.evaluate(() => {
    localStorage.setItem('auth_token', 'not-a-token')
    localStorage.setItem('refresh_token', 'nor-this')
  })
  await page.goto('/workflows')
  await expect(page.getByRole('heading', { name: 'Sign in' })).toBeVisible()
  await expect(page.getByRole('status')).toContainText('Token validation failed')
  expect(await page.evaluate(() => localStorage.getItem('auth_token'))).toBeNull()
})
