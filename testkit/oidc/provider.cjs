// A local OpenID Connect provider for tests (oauth2-mock-server), started by
// testkit's OidcProvider. Prints its issuer URL on the first line of stdout.
//
// The person who "signs in" next is set by writing one JSON line to stdin:
//   {"sub": "...", "email": "...", "email_verified": true, "name": "..."}
// Their claims go into the ID token and the user-info answer. With
// {"claims_in_id_token": false} the address is only on the user-info endpoint.
'use strict';
const readline = require('node:readline');
const { OAuth2Server } = require('oauth2-mock-server');

let person = { sub: 'tester', email: 'tester@example.test', email_verified: true, name: 'Tester' };
let inIdToken = true;
const server = new OAuth2Server();

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (!line.trim()) return;
  const next = JSON.parse(line);
  if ('issuer' in next) {
    // The URL the tests reach it by: it goes into every token's `iss`.
    server.issuer.url = next.issuer;
    process.stdout.write('ok\n');
    return;
  }
  if ('claims_in_id_token' in next) {
    inIdToken = next.claims_in_id_token;
    delete next.claims_in_id_token;
  }
  person = next;
  process.stdout.write('ok\n');
});

async function main() {
  await server.issuer.keys.generate('RS256');
  server.service.on('beforeTokenSigning', (token, req) => {
    // Only the ID token (it carries the nonce or the audience of a code grant).
    if (req.body && req.body.grant_type === 'authorization_code' && token.payload.aud !== undefined && token.payload.scope === undefined) {
      Object.assign(token.payload, inIdToken ? person : { sub: person.sub });
    }
  });
  server.service.on('beforeUserinfo', (userInfo) => {
    userInfo.body = person;
  });
  await server.start(0, '127.0.0.1');
  process.stdout.write(server.issuer.url + '\n');
  process.stdin.on('end', () => server.stop().then(() => process.exit(0)));
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack ? e.stack : e) + '\n');
  process.exit(1);
});
