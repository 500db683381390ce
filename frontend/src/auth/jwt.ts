// Reads the claims the app needs from an access token. The signature is the server's business;
// a token that does not even decode is treated as invalid ("Token validation failed").
export interface Claims {
  sub?: string
  exp?: number
  tenant?: string
  roles?: string[]
}

export function decodeClaims(token: string): Claims | null {
  const parts = token.split('.')
  if (parts.length !== 3) return null
  try {
    const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/')
    const padded = b64 + '='.repeat((4 - (b64.length % 4)) % 4)
    const json = new TextDecoder().decode(Uint8Array.from(atob(padded), (c) => c.charCodeAt(0)))
    const claims = JSON.parse(json) as unknown
    return claims !== null && typeof claims === 'object' ? (claims as Claims) : null
  } catch {
    return null
  }
}

/** Milliseconds since the epoch at which `token` expires; null when it carries no `exp`. */
export function expiresAt(token: string): number | null {
  const exp = decodeClaims(token)?.exp
  return typeof exp === 'number' ? exp * 1000 : null
}
