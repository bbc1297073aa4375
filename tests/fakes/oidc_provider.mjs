// A real OpenID Connect provider (the `oidc-provider` package) on loopback for the OIDC tests.
//
// Usage: node tests/fakes/oidc_provider.mjs <config.json>
// The config (written by tests/fakes/oidc.py) names the issuer and port, the signing keys
// (private JWKs, so the tests can also sign tokens of their own with the same key), the clients
// and the accounts with the groups their `groups` claim carries. Logins use the package's
// development interactions: any login name with any password, then a consent page.
// Prints "ready <issuer>" on stdout once listening.

import { readFileSync } from 'node:fs';

import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const accounts = config.accounts || {};
const clientGroups = Object.fromEntries((config.clients || []).map((c) => [c.client_id, c.groups || []]));

function groupsOf(accountId) {
  return (accounts[accountId] && accounts[accountId].groups) || [];
}

const provider = new Provider(config.issuer, {
  clients: (config.clients || []).map(({ groups, ...client }) => client),
  jwks: config.jwks,
  cookies: { keys: ['reelhouse-oidc-test-cookie-key'] },
  pkce: { required: () => true },
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name', 'groups'],
    email: ['email', 'email_verified'],
  },
  scopes: ['openid', 'profile', 'email', 'api'],
  ttl: { AccessToken: config.accessTokenTTL || 300, IdToken: 300, Interaction: 600, Session: 3600, Grant: 3600 },
  async findAccount(_ctx, sub) {
    return {
      accountId: sub,
      async claims() {
        return {
          sub,
          preferred_username: (accounts[sub] && accounts[sub].username) || sub,
          name: sub,
          email: `${sub}@example.test`,
          email_verified: true,
          groups: groupsOf(sub),
        };
      },
    };
  },
  async extraTokenClaims(_ctx, token) {
    if (token.kind === 'ClientCredentials') return { groups: clientGroups[token.clientId] || [] };
    if (token.accountId) return { groups: groupsOf(token.accountId) };
    return undefined;
  },
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      async getResourceServerInfo(_ctx, resourceIndicator) {
        if (resourceIndicator !== config.apiAudience) {
          throw new Error(`unknown resource ${resourceIndicator}`);
        }
        return {
          scope: 'api',
          audience: config.apiAudience,
          accessTokenFormat: 'jwt',
          accessTokenTTL: config.accessTokenTTL || 300,
        };
      },
    },
  },
});

provider.on('server_error', (_ctx, err) => console.error('server_error', err));

const server = provider.listen(config.port, '127.0.0.1', () => {
  console.log(`ready ${config.issuer}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
