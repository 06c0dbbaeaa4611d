//! The auth filter (filters/auth) through the real binary: tokens signed here
//! with keys made here (HS256, RS256 from an inline JWKS, ES256), API keys,
//! and what the client and the upstream see.

use crate::support::client::{self, send};
use crate::support::filters::wasm;
use crate::support::metrics;
use crate::support::{Running, TestProxy, Upstream, refused};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use http::Request;
use p256::ecdsa::SigningKey as EcKey;
use rsa::pkcs1v15::SigningKey as RsaSigner;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, rand_core::OsRng};
use serde_json::{Value, json};
use sha2::Sha256;
use std::sync::OnceLock;

const HS_SECRET: &str = "a shared secret of at least 32 bytes";
const API_KEY: &str = "k-ci-7f3a9c2e51d8";

/// Keys made once per test binary (an RSA key takes a moment).
struct Keys {
    rsa: RsaPrivateKey,
    ec: EcKey,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        rsa: RsaPrivateKey::new(&mut OsRng, 2048).expect("RSA key"),
        ec: EcKey::random(&mut OsRng),
    })
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The public keys as a JWKS, the way an identity provider publishes them.
fn jwks() -> Value {
    let rsa = &keys().rsa;
    let ec = keys().ec.verifying_key().to_encoded_point(false);
    json!({ "keys": [
        { "kty": "RSA", "kid": "rsa-1", "use": "sig", "alg": "RS256",
          "n": b64(rsa.n().to_bytes_be()), "e": b64(rsa.e().to_bytes_be()) },
        { "kty": "EC", "kid": "ec-1", "crv": "P-256",
          "x": b64(ec.x().expect("x")), "y": b64(ec.y().expect("y")) },
    ]})
}

fn hmac_sign(secret: &[u8], input: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("hmac");
    mac.update(input.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// A compact JWS of `claims` with `header`, signed with this file's key
/// for the header's `alg` (`none`: no signature).
fn sign(header: Value, claims: &Value) -> String {
    let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let signature = match header["alg"].as_str().expect("alg") {
        "HS256" => hmac_sign(HS_SECRET.as_bytes(), &input),
        "RS256" => RsaSigner::<Sha256>::new(keys().rsa.clone()).sign(input.as_bytes()).to_vec(),
        "ES256" => {
            let signature: p256::ecdsa::Signature = keys().ec.sign(input.as_bytes());
            signature.to_bytes().to_vec()
        }
        _ => Vec::new(),
    };
    format!("{input}.{}", b64(signature))
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64
}

/// Claims that meet every requirement of [`filter_config`], with `changes`
/// applied (`null` removes a claim).
fn claims(changes: Value) -> Value {
    let mut c = json!({
        "sub": "alice", "iss": "https://id.example.test", "aud": ["web", "orders"],
        "exp": now() + 300, "iat": now(), "tenant": "acme", "scope": "orders:read orders:write",
    });
    for (name, value) in changes.as_object().expect("object") {
        match value {
            Value::Null => c.as_object_mut().expect("object").remove(name),
            _ => c.as_object_mut().expect("object").insert(name.clone(), value.clone()),
        };
    }
    c
}

fn token(alg: &str, kid: &str, changes: Value) -> String {
    sign(json!({ "alg": alg, "kid": kid, "typ": "JWT" }), &claims(changes))
}

/// JWTs (an inline HS256 key and the JWKS) and one API key.
fn filter_config() -> Value {
    json!({
        "realm": "orders",
        "jwt": {
            "keys": [{ "kid": "hs-1", "alg": "HS256", "secret": HS_SECRET }],
            "jwks": jwks(),
            "issuers": ["https://id.example.test"],
            "audiences": ["orders"],
            "leeway_secs": 60,
            "required_claims": ["tenant", { "name": "scope", "values": ["orders:read"] }],
            "claims_to_headers": { "tenant": "x-tenant" },
        },
        "api_keys": { "keys": [{ "key": API_KEY, "subject": "ci-bot" }] },
    })
}

/// The filter in front of `upstream`. RS256 and ES256 take a few ms per
/// request; the time limit is generous because the whole suite shares the
/// machine's CPUs.
fn yaml(upstream: std::net::SocketAddr, config: &Value) -> String {
    format!(
        r#"admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    routes:
      - {{ name: api, cluster: app, filters: [auth] }}
clusters:
  - {{ name: app, endpoints: ["{upstream}"] }}
filters:
  - name: auth
    module: {}
    config: {config}
    limits: {{ timeout: 200ms }}
"#,
        wasm("auth").display()
    )
}

fn proxy(upstream: &Upstream, config: &Value) -> Running {
    TestProxy::new(yaml(upstream.addr, config)).start()
}

async fn call(proxy: &Running, path: &str, headers: &[(&str, &str)]) -> client::Reply {
    let mut req = Request::builder().uri(proxy.url("ingress", path));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    send(&client::h1(), req.body(client::empty()).expect("request")).await.expect("send")
}

async fn bearer(proxy: &Running, token: &str) -> client::Reply {
    call(proxy, "/orders", &[("authorization", &format!("Bearer {token}"))]).await
}

/// Asserts a 401 whose Bearer challenge says `invalid_token` with `why`.
fn assert_invalid_token(r: &client::Reply, why: &str) {
    assert_eq!(r.status, 401, "{why}: {:?}", r.body);
    assert_eq!(
        r.header("www-authenticate"),
        Some(format!("Bearer realm=\"orders\", error=\"invalid_token\", error_description=\"{why}\"").as_str())
    );
    assert_eq!(r.body, format!("invalid token: {why}\n"));
}

fn assert_forbidden(r: &client::Reply, why: &str) {
    assert_eq!(r.status, 403, "{why}: {:?}", r.body);
    assert_eq!(
        r.header("www-authenticate"),
        Some(format!("Bearer realm=\"orders\", error=\"insufficient_scope\", error_description=\"{why}\"").as_str())
    );
    assert_eq!(r.body, format!("forbidden: {why}\n"));
}

#[tokio::test]
async fn hs256_rs256_and_es256_tokens_reach_the_upstream_as_their_subject() {
    let upstream = Upstream::start("app").await;
    let proxy = proxy(&upstream, &filter_config());
    // RS256 without a kid: every RS256 key is tried.
    let cases = [("HS256", Some("hs-1")), ("RS256", Some("rsa-1")), ("ES256", Some("ec-1")), ("RS256", None)];
    for (alg, kid) in cases {
        let subject = format!("user-{alg}");
        let header = match kid {
            Some(kid) => json!({ "alg": alg, "kid": kid }),
            None => json!({ "alg": alg }),
        };
        let token = sign(header, &claims(json!({ "sub": subject })));
        let auth = format!("Bearer {token}");
        // The client tries to pass itself off as someone else.
        let spoofed = [("authorization", auth.as_str()), ("x-auth-subject", "admin"), ("x-tenant", "evil")];
        let r = call(&proxy, "/orders", &spoofed).await;
        assert_eq!(r.status, 200, "{alg} {kid:?}: {:?}", r.body);
        let seen = &r.json()["headers"];
        assert_eq!(seen["x-auth-subject"], subject.as_str(), "the filter's subject replaces the client's");
        assert_eq!(seen["x-tenant"], "acme", "claims_to_headers replaces the client's value too");
        assert_eq!(seen["authorization"], auth.as_str(), "forward_token defaults to true");
    }
    assert_eq!(upstream.hits(), 4);
    assert!(metrics(&proxy).await.contains("wasp_filter_auth_allowed_total{filter=\"auth\"} 4"));
}

#[tokio::test]
async fn an_expired_token_gets_401_unless_within_the_leeway() {
    let upstream = Upstream::start("app").await;
    let proxy = proxy(&upstream, &filter_config());
    let expired = bearer(&proxy, &token("ES256", "ec-1", json!({ "exp": now() - 120 }))).await;
    assert_invalid_token(&expired, "token expired");
    let within = bearer(&proxy, &token("ES256", "ec-1", json!({ "exp": now() - 30 }))).await;
    assert_eq!(within.status, 200, "60 s of leeway: {:?}", within.body);
    let no_exp = bearer(&proxy, &token("HS256", "hs-1", json!({ "exp": null }))).await;
    assert_invalid_token(&no_exp, "token has no exp");
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn a_cached_token_still_expires_and_a_tampered_copy_is_refused() {
    let upstream = Upstream::start("app").await;
    let mut config = filter_config();
    config["jwt"]["leeway_secs"] = json!(0);
    let proxy = proxy(&upstream, &config);
    let exp = now() + 2;
    let good = token("HS256", "hs-1", json!({ "exp": exp }));
    for _ in 0..3 {
        let r = bearer(&proxy, &good).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    // One signature character changed (not the last, whose low bits are padding).
    let mut tampered = good.clone().into_bytes();
    let at = tampered.len() - 2;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    assert_invalid_token(&bearer(&proxy, &tampered).await, "signature invalid");
    while now() <= exp {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_invalid_token(&bearer(&proxy, &good).await, "token expired");
    assert_eq!(upstream.hits(), 3);
}

#[tokio::test]
async fn a_token_not_yet_valid_gets_401() {
    let upstream = Upstream::start("app").await;
    let proxy = proxy(&upstream, &filter_config());
    let early = bearer(&proxy, &token("RS256", "rsa-1", json!({ "nbf": now() + 300 }))).await;
    assert_invalid_token(&early, "token not yet valid");
    let within = bearer(&proxy, &token("RS256", "rsa-1", json!({ "nbf": now() + 30 }))).await;
    assert_eq!(within.status, 200, "60 s of leeway: {:?}", within.body);
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn forged_tampered_and_unsigned_tokens_get_401() {
    let upstream = Upstream::start("app").await;
    let proxy = proxy(&upstream, &filter_config());
    let good = token("HS256", "hs-1", json!({}));
    let (signed, _) = good.rsplit_once('.').expect("jws");
    let (header, _) = signed.split_once('.').expect("jws");

    // Another subject pasted under the genuine signature.
    let payload = b64(claims(json!({ "sub": "admin" })).to_string());
    let tampered = format!("{header}.{payload}.{}", good.rsplit_once('.').expect("jws").1);
    assert_invalid_token(&bearer(&proxy, &tampered).await, "signature invalid");

    // Signed with keys the filter does not trust.
    let input = format!("{header}.{}", b64(claims(json!({})).to_string()));
    let wrong_secret = format!("{input}.{}", b64(hmac_sign(b"another secret of at least 32 bytes", &input)));
    assert_invalid_token(&bearer(&proxy, &wrong_secret).await, "signature invalid");
    let ec_input =
        format!("{}.{}", b64(json!({ "alg": "ES256", "kid": "ec-1" }).to_string()), b64(claims(json!({})).to_string()));
    let stranger: p256::ecdsa::Signature = EcKey::random(&mut OsRng).sign(ec_input.as_bytes());
    assert_invalid_token(
        &bearer(&proxy, &format!("{ec_input}.{}", b64(stranger.to_bytes()))).await,
        "signature invalid",
    );

    // alg confusion: HMAC "signed" with the RSA public key, which is no secret.
    let public = keys().rsa.n().to_bytes_be();
    for (header, why) in [
        (json!({ "alg": "HS256", "kid": "rsa-1" }), "alg not allowed for this key"),
        (json!({ "alg": "HS256" }), "signature invalid"),
    ] {
        let input = format!("{}.{}", b64(header.to_string()), b64(claims(json!({})).to_string()));
        let confused = format!("{input}.{}", b64(hmac_sign(&public, &input)));
        assert_invalid_token(&bearer(&proxy, &confused).await, why);
    }

    // alg none, with and without a kid.
    for header in [json!({ "alg": "none" }), json!({ "alg": "none", "kid": "hs-1" })] {
        let unsigned = sign(header, &claims(json!({})));
        assert!(unsigned.ends_with('.'));
        assert_invalid_token(&bearer(&proxy, &unsigned).await, "unsigned tokens are not accepted");
    }

    assert_invalid_token(&bearer(&proxy, "not-a-jwt").await, "malformed token");
    assert_invalid_token(&bearer(&proxy, &token("HS256", "nope", json!({}))).await, "unknown key id");
    assert_eq!(upstream.hits(), 0, "no forged request reached the upstream");
}

#[tokio::test]
async fn a_genuine_token_whose_claims_fall_short_gets_403() {
    let upstream = Upstream::start("app").await;
    let proxy = proxy(&upstream, &filter_config());
    let cases = [
        (json!({ "aud": "billing" }), "audience not allowed"),
        (json!({ "aud": null }), "audience not allowed"),
        (json!({ "iss": "https://evil.example.test" }), "issuer not allowed"),
        (json!({ "tenant": null }), "required claim missing"),
        (json!({ "scope": "orders:write" }), "claim value not allowed"),
    ];
    for (changes, why) in cases {
        assert_forbidden(&bearer(&proxy, &token("RS256", "rsa-1", changes)).await, why);
    }
    let list_scope =
        bearer(&proxy, &token("RS256", "rsa-1", json!({ "scope": ["orders:read"], "aud": "orders" }))).await;
    assert_eq!(list_scope.status, 200, "{:?}", list_scope.body);
    assert_eq!(upstream.hits(), 1);
    let m = metrics(&proxy).await;
    assert!(m.contains("wasp_filter_auth_denied_total{filter=\"auth\"} 5"), "{m}");
}

#[tokio::test]
async fn a_request_without_credentials_gets_401_with_a_plain_challenge() {
    let upstream = Upstream::start("app").await;
    let proxy = proxy(&upstream, &filter_config());
    for headers in [vec![], vec![("authorization", "Basic YWxpY2U6c2VjcmV0")]] {
        let r = call(&proxy, "/orders", &headers).await;
        assert_eq!(r.status, 401);
        let challenges: Vec<_> =
            r.headers.get_all("www-authenticate").iter().map(|v| v.to_str().expect("ascii")).collect();
        assert_eq!(challenges, ["Bearer realm=\"orders\"", "ApiKey realm=\"orders\""], "no error attribute");
        assert_eq!(r.body, "authentication required\n");
    }
    let log = proxy.wait_access_log(2);
    assert!(log.iter().all(|l| l["status"] == 401 && l["filter"] == "auth" && l["reason"] == "wasp_filter_reply"));
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn an_api_key_authenticates_as_its_subject_and_an_unknown_one_gets_401() {
    let upstream = Upstream::start("app").await;
    let proxy = proxy(&upstream, &filter_config());
    let ok = call(&proxy, "/orders", &[("x-api-key", API_KEY), ("x-auth-subject", "admin")]).await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    assert_eq!(ok.json()["headers"]["x-auth-subject"], "ci-bot");
    assert_eq!(ok.json()["headers"]["x-api-key"], API_KEY, "forward_key defaults to true");

    let wrong = call(&proxy, "/orders", &[("x-api-key", "k-ci-7f3a9c2e51d9")]).await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.header("www-authenticate"), Some("Bearer realm=\"orders\""));
    assert_eq!(wrong.body, "invalid API key\n");

    // Either credential is enough: a bad token next to a good key passes.
    let both = call(&proxy, "/orders", &[("authorization", "Bearer not-a-jwt"), ("x-api-key", API_KEY)]).await;
    assert_eq!(both.status, 200);
    assert_eq!(both.json()["headers"]["x-auth-subject"], "ci-bot");

    // Two keys: the upstream might read the other one.
    let twice = call(&proxy, "/orders", &[("x-api-key", API_KEY), ("x-api-key", "other")]).await;
    assert_eq!(twice.status, 400);
    assert_eq!(twice.body, "bad request: more than one API key header\n");
    assert_eq!(upstream.hits(), 2);
}

#[tokio::test]
async fn a_custom_token_header_and_subject_header_without_forwarding_the_credentials() {
    let upstream = Upstream::start("app").await;
    let config = json!({
        "subject_header": "x-user",
        "public_paths": ["/health"],
        "jwt": {
            "keys": [{ "alg": "HS256", "secret": HS_SECRET }],
            "header": "x-jwt",
            "forward_token": false,
            "subject_claim": "email",
        },
        "api_keys": { "header": "x-key", "keys": [{ "key": API_KEY, "subject": "ci-bot" }], "forward_key": false },
    });
    let proxy = proxy(&upstream, &config);
    let jwt = token("HS256", "any", json!({ "email": "alice@example.test" }));
    let r = call(&proxy, "/orders", &[("x-jwt", &jwt), ("x-user", "admin")]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let seen = &r.json()["headers"];
    assert_eq!(seen["x-user"], "alice@example.test");
    assert!(seen.get("x-jwt").is_none(), "forward_token: false keeps the token from the upstream");
    let r = call(&proxy, "/orders", &[("x-key", API_KEY)]).await;
    assert_eq!(r.json()["headers"]["x-user"], "ci-bot");
    assert!(r.json()["headers"].get("x-key").is_none(), "forward_key: false");

    // Public paths: no credentials pass (with no subject), bad ones do not.
    let open = call(&proxy, "/health?deep=1", &[("x-user", "admin")]).await;
    assert_eq!(open.status, 200);
    assert!(open.json()["headers"].get("x-user").is_none(), "a spoofed subject is removed there too");
    assert_eq!(call(&proxy, "/healthz", &[]).await.status, 401);
    assert_eq!(call(&proxy, "/health/../orders", &[]).await.status, 401);
    assert_eq!(call(&proxy, "/health", &[("x-jwt", "not-a-jwt")]).await.status, 401);
    assert_eq!(upstream.hits(), 3);
    assert!(metrics(&proxy).await.contains("wasp_filter_auth_anonymous_total{filter=\"auth\"} 1"));
}

#[tokio::test]
async fn a_bad_key_in_the_config_fails_wasp_check_with_the_filters_message() {
    let mut config = filter_config();
    config["jwt"]["keys"] =
        json!([{ "kid": "hs-1", "alg": "HS256", "secret": HS_SECRET }, { "alg": "RS256", "e": "AQAB" }]);
    for stderr in refused(&yaml("127.0.0.1:1".parse().expect("addr"), &config)) {
        assert!(
            stderr.contains(
                "filters[0].module: the filter rejected its config: jwt.keys[1]: RS256 key needs `n` and `e`"
            ),
            "{stderr}"
        );
    }
}
