// oidc-provider as a client-credentials authorization server for the test suite.
//
// Usage: node server.mjs SETTINGS.json
//
// SETTINGS.json (written by tests/servers/oidc_provider.py) holds the clients to
// register and the TLS files of the mutual-TLS listener. The server listens on
// two loopback ports chosen by the kernel:
//   - plain HTTP, the issuer itself (discovery, token, introspection, revocation);
//   - HTTPS that asks for a client certificate, published as the discovery
//     document's mtls_endpoint_aliases (RFC 8705 section 5).
// A second issuer on the same listeners, <issuer>/realms/test, has the same
// clients: an issuer with a path, the way Keycloak names its realms, whose
// OpenID configuration lives at <issuer>/realms/test/.well-known/openid-configuration.
// Once both listen it prints one JSON line, {"issuer": ..., "mtls": ..., "realm": ...},
// which the fixture waits for.

import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';

import { calculateJwkThumbprint } from 'jose';
import Provider, { errors } from 'oidc-provider';

const settings = JSON.parse(readFileSync(process.argv[2], 'utf8'));

// A registered public key without a `kid` gets its RFC 7638 thumbprint, computed
// here by jose, so that a client's own thumbprint is checked against an
// implementation other than its own.
for (const client of settings.clients) {
  for (const key of client.jwks?.keys ?? []) {
    key.kid ??= await calculateJwkThumbprint(key, 'sha256');
  }
}

function listen(server) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server.address().port));
  });
}

const plain = http.createServer();
// The TLS listener asks for a certificate but accepts a connection without one
// (or with a self-signed one): oidc-provider decides per client auth method.
const mtls = https.createServer({
  cert: readFileSync(settings.tls.cert_file),
  key: readFileSync(settings.tls.key_file),
  ca: readFileSync(settings.tls.ca_file),
  requestCert: true,
  rejectUnauthorized: false,
});
const port = await listen(plain);
const mtlsPort = await listen(mtls);
const issuer = `http://127.0.0.1:${port}`;
const mtlsBase = `https://127.0.0.1:${mtlsPort}`;

function peerCertificate(ctx) {
  const socket = ctx.req.socket;
  if (typeof socket.getPeerX509Certificate !== 'function') {
    return undefined; // plain HTTP: no certificate
  }
  return socket.getPeerX509Certificate();
}

// A fresh signing key per run, for JWT access tokens issued to the resource below.
const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), alg: 'ES256', use: 'sig' };

function makeProvider(issuerUrl, mtlsUrl) {
  const provider = new Provider(issuerUrl, {
    // Each instance gets its own copy: oidc-provider keeps what it is given.
    clients: structuredClone(settings.clients),
    // Every client is a machine client; the signing key below is EC.
    clientDefaults: {
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      id_token_signed_response_alg: 'ES256',
    },
    clientAuthMethods: [
      'client_secret_basic',
      'client_secret_post',
      'client_secret_jwt',
      'private_key_jwt',
      'tls_client_auth',
      'self_signed_tls_client_auth',
    ],
    scopes: ['api:read', 'api:write'],
    jwks: { keys: [signingKey] },
    cookies: { keys: [randomUUID()] },
    ttl: { ClientCredentials: settings.access_token_ttl },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      mTLS: {
        enabled: true,
        tlsClientAuth: true,
        selfSignedTlsClientAuth: true,
        certificateBoundAccessTokens: false,
        getCertificate: peerCertificate,
        // Chains to the test CA given to the TLS listener.
        certificateAuthorized: (ctx) => ctx.req.socket.authorized === true,
        certificateSubjectMatches: (ctx, property, expected) => (
          property === 'tls_client_auth_subject_dn' && peerCertificate(ctx)?.subject === expected
        ),
      },
      resourceIndicators: {
        enabled: true,
        // Without a `resource` parameter a token stays opaque (introspectable, revocable).
        defaultResource: () => undefined,
        useGrantedResource: () => false,
        getResourceServerInfo: (ctx, resourceIndicator) => {
          if (resourceIndicator !== settings.jwt_resource) {
            throw new errors.InvalidTarget();
          }
          return {
            scope: 'api:read api:write',
            audience: resourceIndicator,
            accessTokenTTL: settings.access_token_ttl,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'ES256' } },
          };
        },
      },
    },
    discovery: {
      mtls_endpoint_aliases: {
        token_endpoint: `${mtlsUrl}/token`,
        introspection_endpoint: `${mtlsUrl}/token/introspection`,
        revocation_endpoint: `${mtlsUrl}/token/revocation`,
      },
    },
  });
  provider.proxy = false;
  return provider.callback();
}

const REALM = '/realms/test';
const rootCallback = makeProvider(issuer, mtlsBase);
const realmCallback = makeProvider(`${issuer}${REALM}`, `${mtlsBase}${REALM}`);

// oidc-provider works out where it is mounted from req.originalUrl and req.url.
function dispatch(req, res) {
  if (req.url === REALM || req.url.startsWith(`${REALM}/`)) {
    req.originalUrl = req.url;
    req.url = req.url.slice(REALM.length) || '/';
    return realmCallback(req, res);
  }
  return rootCallback(req, res);
}
plain.on('request', dispatch);
mtls.on('request', dispatch);

function shutdown() {
  plain.close();
  mtls.close();
  plain.closeAllConnections();
  mtls.closeAllConnections();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

process.stdout.write(`${JSON.stringify({ issuer, mtls: mtlsBase, realm: `${issuer}${REALM}` })}\n`);
