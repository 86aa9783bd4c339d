//! A real local OpenID Connect provider for sign-in tests: oauth2-mock-server
//! from npm, run by Node.js (`testkit/oidc/provider.cjs`). It publishes a
//! discovery document and its signing keys, checks PKCE, carries the nonce
//! into the ID token and signs it with RS256, like a production provider.
//!
//! `scripts/test.sh` installs the npm package (`npm ci --prefix testkit/oidc`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The provider process; stopped when dropped.
#[derive(Debug)]
pub struct OidcProvider {
    /// Issuer URL (`http://127.0.0.1:PORT`), for `oidc_issuer_url`.
    pub issuer: String,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    _child: Child,
}

/// Who signs in next.
#[derive(Debug, Clone)]
pub struct Person {
    /// The provider's subject.
    pub sub: String,
    /// Their address.
    pub email: String,
    /// Whether the provider vouches for the address.
    pub email_verified: bool,
    /// Whether the claims are in the ID token (else only on user-info).
    pub in_id_token: bool,
}

impl Person {
    /// A person with a verified address, claims in the ID token.
    pub fn verified(sub: &str, email: &str) -> Self {
        Self {
            sub: sub.to_owned(),
            email: email.to_owned(),
            email_verified: true,
            in_id_token: true,
        }
    }
}

impl OidcProvider {
    /// Starts the provider on a free loopback port.
    pub async fn start() -> Self {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("oidc");
        assert!(
            dir.join("node_modules/oauth2-mock-server").is_dir(),
            "the test OpenID Connect provider is not installed: run `npm ci --prefix testkit/oidc` (scripts/test.sh does)"
        );
        let mut child = Command::new("node")
            .arg(dir.join("provider.cjs"))
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start node (install Node.js 18 or later)");
        let stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
            .await
            .expect("the OpenID Connect provider did not start within 30 s")
            .expect("read the provider's output")
            .expect("the OpenID Connect provider exited at start");
        // It names itself `localhost`; tests use the address it listens on.
        let issuer = first.trim().replace("//localhost:", "//127.0.0.1:");
        let mut provider = Self {
            issuer,
            stdin,
            stdout,
            _child: child,
        };
        provider
            .send(&serde_json::json!({ "issuer": provider.issuer.clone() }))
            .await;
        provider
    }

    /// Sets who signs in on the next authorization.
    pub async fn sign_in_as(&mut self, p: &Person) {
        self.send(&serde_json::json!({
            "sub": p.sub,
            "email": p.email,
            "email_verified": p.email_verified,
            "name": format!("Person {}", p.sub),
            "claims_in_id_token": p.in_id_token,
        }))
        .await;
    }

    async fn send(&mut self, v: &serde_json::Value) {
        let mut line = v.to_string();
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .await
            .expect("write to the provider");
        self.stdin.flush().await.expect("flush");
        let ack = tokio::time::timeout(Duration::from_secs(10), self.stdout.next_line())
            .await
            .expect("the provider did not answer")
            .expect("read the provider's answer");
        assert_eq!(ack.as_deref(), Some("ok"), "the provider's answer");
    }
}
