//! Key pairs for JWT tests, generated with the `openssl` command at run time so
//! no private key is ever committed.

use std::process::Command;

use base64::Engine;

/// Fresh test keys and the JWKS that publishes their public halves.
#[derive(Debug, Clone)]
pub struct TestKeys {
    /// RSA private key (PKCS#8 PEM), kid `test-rsa`, for RS256.
    pub rsa_private_pem: String,
    /// P-256 private key (PKCS#8 PEM), kid `test-ec`, for ES256.
    pub ec_private_pem: String,
    /// `{"keys": [...]}` with both public keys.
    pub jwks: serde_json::Value,
}

/// Runs the `openssl` command and returns its standard output, failing the
/// test with openssl's message when it fails.
pub(crate) fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Generates an RSA and a P-256 key pair.
pub fn generate() -> TestKeys {
    let dir = tempfile::tempdir().expect("temporary directory");
    let rsa = dir.path().join("rsa.pem");
    let ec = dir.path().join("ec.pem");
    let rsa_path = rsa.to_str().expect("utf-8 path");
    let ec_path = ec.to_str().expect("utf-8 path");
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        rsa_path,
    ]);
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        ec_path,
    ]);

    let modulus =
        String::from_utf8(openssl(&["rsa", "-in", rsa_path, "-noout", "-modulus"])).expect("utf-8");
    let n = hex_bytes(modulus.trim().trim_start_matches("Modulus="));
    // The DER SubjectPublicKeyInfo of a P-256 key ends with the point 04 || x || y.
    let spki = openssl(&["pkey", "-in", ec_path, "-pubout", "-outform", "DER"]);
    let point = &spki[spki.len() - 65..];
    assert_eq!(point[0], 4, "uncompressed point");

    TestKeys {
        rsa_private_pem: std::fs::read_to_string(&rsa).expect("rsa key"),
        ec_private_pem: std::fs::read_to_string(&ec).expect("ec key"),
        jwks: serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "test-rsa", "alg": "RS256", "use": "sig", "n": b64url(&n), "e": b64url(&[1, 0, 1])},
            {"kty": "EC", "kid": "test-ec", "alg": "ES256", "use": "sig", "crv": "P-256",
             "x": b64url(&point[1..33]), "y": b64url(&point[33..])}
        ]}),
    }
}
