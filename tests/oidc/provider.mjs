// tokenjar's end-to-end tests: a real OpenID Provider (oidc-provider) for the
// OIDC login mode (SPEC §16), started by tests/support/oidc_provider.rs.
//
// Plain http on 127.0.0.1, issuer http://127.0.0.1:PORT. One client, set by
// environment variables (the test chooses them):
//   OIDC_PORT                 port to listen on (0 or unset: a free one)
//   OIDC_CLIENT_ID            client_id (default "tokenjar")
//   OIDC_CLIENT_SECRET        client_secret; empty or unset: a public client
//                             (token_endpoint_auth_method "none")
//   OIDC_REDIRECT_URIS        space-separated redirect_uris (required)
//   OIDC_POST_LOGOUT_REDIRECT_URIS  space-separated post_logout_redirect_uris
//   OIDC_BACKCHANNEL_LOGOUT_URI     backchannel_logout_uri (optional)
//   OIDC_ACCESS_TOKEN_TTL     access token lifetime in seconds (default 60)
//   OIDC_ID_TOKEN_TTL         ID token lifetime in seconds (default 300)
//   OIDC_REFRESH_TOKEN_TTL    refresh token lifetime in seconds (default 86400)
//
// When ready it prints one line `listening http://127.0.0.1:PORT` to stdout.
// Extra routes for the tests (not OpenID): GET /test/counters (what the token,
// revocation and logout endpoints did, as JSON) and POST /test/rotate-keys (a
// new signing key, served first in the JWKS; the old ones stay for
// verification). It exits when stdin closes or on SIGTERM/SIGINT, so a test
// that crashes leaves no provider behind (run by hand, give it a terminal or
// a pipe: with stdin at /dev/null it exits at once).

import * as crypto from 'node:crypto';
import * as http from 'node:http';

import Provider from 'oidc-provider';
// Not part of the package's documented API, but the package has no "exports"
// map, so these resolve: the per-provider private state (the keystore lives
// there) and the function that builds a keystore from a JWKS. Used only by
// /test/rotate-keys, because the configuration's `jwks` is read once.
import instance from 'oidc-provider/lib/helpers/weak_cache.js';
import initializeKeyStore from 'oidc-provider/lib/helpers/initialize_keystore.js';

const env = (name, fallback) => {
  const value = process.env[name];
  return value === undefined || value === '' ? fallback : value;
};
const seconds = (name, fallback) => {
  const value = Number.parseInt(env(name, String(fallback)), 10);
  if (!Number.isInteger(value) || value <= 0) {
    throw new Error(`${name} must be a positive number of seconds`);
  }
  return value;
};
const list = (name) => env(name, '').split(/\s+/).filter(Boolean);

const port = Number.parseInt(env('OIDC_PORT', process.argv[2] ?? '0'), 10);
const clientId = env('OIDC_CLIENT_ID', 'tokenjar');
const clientSecret = env('OIDC_CLIENT_SECRET', undefined);
const redirectUris = list('OIDC_REDIRECT_URIS');
const postLogoutRedirectUris = list('OIDC_POST_LOGOUT_REDIRECT_URIS');
const backchannelLogoutUri = env('OIDC_BACKCHANNEL_LOGOUT_URI', undefined);
const accessTokenTtl = seconds('OIDC_ACCESS_TOKEN_TTL', 60);
const idTokenTtl = seconds('OIDC_ID_TOKEN_TTL', 300);
const refreshTokenTtl = seconds('OIDC_REFRESH_TOKEN_TTL', 86400);

if (redirectUris.length === 0) {
  throw new Error('OIDC_REDIRECT_URIS must name at least one redirect_uri');
}

// Our own RS256 keys rather than the package's fixed development keys: a key
// rotation needs the private parts of the old keys to rebuild the keystore.
const signingKey = () => ({
  ...crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' }),
  kid: crypto.randomUUID(),
  use: 'sig',
  alg: 'RS256',
});
let keys = [signingKey()];

// What the provider did, for the tests to assert on (e.g. "one refresh, not
// two"). Grant types count token endpoint calls by their grant_type.
const counters = {
  token: { authorization_code: 0, refresh_token: 0 },
  token_errors: { authorization_code: 0, refresh_token: 0 },
  revocation: 0,
  end_session: 0,
  backchannel_logout: 0,
  backchannel_logout_errors: 0,
  grants_revoked: 0,
  key_rotations: 0,
};
const countGrant = (table, ctx) => {
  const grantType = ctx.oidc?.params?.grant_type ?? ctx.request.body?.grant_type ?? 'unknown';
  table[grantType] = (table[grantType] ?? 0) + 1;
};

// Listen first: with port 0 the issuer is known only once the port is.
const server = http.createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(port, '127.0.0.1', resolve);
});
const issuer = `http://127.0.0.1:${server.address().port}`;

const client = {
  client_id: clientId,
  redirect_uris: redirectUris,
  post_logout_redirect_uris: postLogoutRedirectUris,
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  ...(clientSecret
    ? { client_secret: clientSecret, token_endpoint_auth_method: 'client_secret_basic' }
    : { token_endpoint_auth_method: 'none' }),
  ...(backchannelLogoutUri
    ? { backchannel_logout_uri: backchannelLogoutUri, backchannel_logout_session_required: true }
    : {}),
};

const provider = new Provider(issuer, {
  clients: [client],
  jwks: { keys },
  // Any login name is an account; its claims derive from the name.
  async findAccount(_ctx, sub) {
    return {
      accountId: sub,
      async claims() {
        return {
          sub,
          name: `Test User ${sub}`,
          email: `${sub}@example.test`,
          email_verified: true,
          preferred_username: sub,
        };
      },
    };
  },
  // The authorization-code flow alone (no implicit or hybrid responses).
  responseTypes: ['code'],
  // The package's default puts only `sub` (and session claims) in an ID
  // token that comes with an access token, leaving the scopes' claims to
  // userinfo; tokenjar reads the user's claims from the ID token.
  conformIdTokenClaims: false,
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
  },
  // S256 only is the package's default; PKCE is required for every client,
  // confidential ones included.
  pkce: { required: () => true },
  // By default a refresh token needs the offline_access scope, which the
  // package drops unless prompt=consent ran: issue one whenever the client
  // may use the refresh_token grant instead.
  issueRefreshToken: async (_ctx, c) => c.grantTypeAllowed('refresh_token'),
  // Every refresh returns a new refresh token; replaying a used one is
  // invalid_grant and revokes the whole grant (the package's reuse rule).
  rotateRefreshToken: true,
  ttl: {
    AccessToken: accessTokenTtl,
    IdToken: idTokenTtl,
    RefreshToken: refreshTokenTtl,
  },
  features: {
    devInteractions: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    backchannelLogout: { enabled: true },
  },
  // The package's outgoing requests (back-channel logout) go through a
  // dispatcher that refuses special-use addresses, loopback included, as an
  // SSRF guard; the tests' back-channel logout endpoint is on 127.0.0.1, so
  // the plain fetch is used instead.
  fetch: (url, { dispatcher: _ssrfGuard, ...options }) => globalThis.fetch(url, options),
  // Fixed keys: nothing secret about a test provider's cookies, and it saves
  // the package's warning about missing keys.
  cookies: { keys: ['tokenjar-test-provider-cookie-key'] },
});

provider.on('grant.success', (ctx) => countGrant(counters.token, ctx));
provider.on('grant.error', (ctx) => countGrant(counters.token_errors, ctx));
provider.on('grant.revoked', () => { counters.grants_revoked += 1; });
provider.on('end_session.success', () => { counters.end_session += 1; });
provider.on('backchannel.success', () => { counters.backchannel_logout += 1; });
provider.on('backchannel.error', () => { counters.backchannel_logout_errors += 1; });
// The revocation endpoint emits no success event: count its requests.
provider.use(async (ctx, next) => {
  await next();
  if (ctx.method === 'POST' && ctx.path === '/token/revocation') {
    counters.revocation += 1;
  }
});
// A test that provokes errors should see them in its output, not a silence.
provider.on('server_error', (_ctx, err) => console.error('server_error', err));

const rotateKeys = () => {
  keys = [signingKey(), ...keys];
  initializeKeyStore.call(provider, { keys });
  counters.key_rotations += 1;
  return instance(provider).jwks;
};

const json = (res, status, body) => {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
};

const oidc = provider.callback();
server.on('request', (req, res) => {
  const path = new URL(req.url, issuer).pathname;
  if (path === '/test/counters' && req.method === 'GET') {
    json(res, 200, counters);
  } else if (path === '/test/rotate-keys' && req.method === 'POST') {
    json(res, 200, rotateKeys());
  } else {
    oidc(req, res);
  }
});

const exit = () => {
  server.close();
  process.exit(0);
};
process.on('SIGTERM', exit);
process.on('SIGINT', exit);
process.stdin.on('end', exit);
process.stdin.on('close', exit);
process.stdin.resume();

console.log(`listening ${issuer}`);
