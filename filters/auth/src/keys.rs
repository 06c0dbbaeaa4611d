//! Verification keys: JWKs from the config (inline `keys` or a `jwks`
//! object) turned into one key per algorithm. A key is bound to exactly one
//! algorithm when it is loaded, so an RSA or EC public key can never be used
//! as an HMAC secret (alg confusion), and `none` is not an algorithm at all.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rsa::signature::Verifier as _;
use serde::Deserialize;
use sha2::Sha256;

/// The signature algorithms this filter accepts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Alg {
    /// HMAC with SHA-256.
    Hs256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// ECDSA on P-256 with SHA-256.
    Es256,
}

impl Alg {
    /// The algorithm named by a JOSE `alg` value, if supported.
    pub fn parse(name: &str) -> Option<Alg> {
        match name {
            "HS256" => Some(Alg::Hs256),
            "RS256" => Some(Alg::Rs256),
            "ES256" => Some(Alg::Es256),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Alg::Hs256 => "HS256",
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
        }
    }

    fn kty(self) -> &'static str {
        match self {
            Alg::Hs256 => "oct",
            Alg::Rs256 => "RSA",
            Alg::Es256 => "EC",
        }
    }
}

/// A JSON Web Key as written in the config (RFC 7517), plus `secret`: an
/// HMAC secret as plain text, for inline keys. Other JWK members (`x5c`,
/// `key_ops`, ...) are ignored so that an identity provider's JWKS can be
/// pasted as is.
#[derive(Deserialize, Default)]
pub struct Jwk {
    kty: Option<String>,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    /// HMAC secret, base64url.
    k: Option<String>,
    /// HMAC secret, as text.
    secret: Option<String>,
    /// RSA modulus and exponent, base64url big-endian.
    n: Option<String>,
    e: Option<String>,
    /// EC curve and point.
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    /// Private members: refused, a proxy only needs public keys.
    d: Option<serde_json::Value>,
    p: Option<serde_json::Value>,
    q: Option<serde_json::Value>,
}

/// What verifies signatures for one algorithm.
enum Material {
    Hmac(Vec<u8>),
    Rsa(Box<rsa::pkcs1v15::VerifyingKey<Sha256>>),
    Ec(p256::ecdsa::VerifyingKey),
}

/// A loaded key: its id, the one algorithm it verifies, and the material.
pub struct Key {
    /// `kid`, matched against a token's `kid`.
    pub kid: Option<String>,
    /// The only algorithm this key verifies.
    pub alg: Alg,
    material: Material,
}

/// Smallest HMAC secret (RFC 7518 §3.2: at least the hash size).
const MIN_HMAC_BYTES: usize = 32;
/// Smallest RSA modulus (RFC 7518 §3.3).
const MIN_RSA_BITS: usize = 2048;

impl Key {
    /// Loads `jwk`. Inline keys must name their `alg`; JWKS keys may leave
    /// it out, and it follows from `kty`. `Ok(None)`: an encryption key
    /// (`use: enc`) in a JWKS, skipped.
    pub fn load(jwk: &Jwk, from_jwks: bool) -> Result<Option<Key>, String> {
        if jwk.d.is_some() || jwk.p.is_some() || jwk.q.is_some() {
            return Err("contains private key material (`d`, `p` or `q`); give only the public key".into());
        }
        if jwk.use_.as_deref() == Some("enc") {
            return if from_jwks { Ok(None) } else { Err("is an encryption key (`use: enc`)".into()) };
        }
        let alg = key_alg(jwk, from_jwks)?;
        let material = match alg {
            Alg::Hs256 => hmac_material(jwk)?,
            Alg::Rs256 => rsa_material(jwk)?,
            Alg::Es256 => ec_material(jwk)?,
        };
        Ok(Some(Key { kid: jwk.kid.clone(), alg, material }))
    }

    /// Whether `signature` signs `input` under this key. Constant time for
    /// HMAC.
    pub fn verify(&self, input: &[u8], signature: &[u8]) -> bool {
        match &self.material {
            Material::Hmac(secret) => {
                let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else { return false };
                mac.update(input);
                mac.verify_slice(signature).is_ok()
            }
            Material::Rsa(key) => rsa::pkcs1v15::Signature::try_from(signature)
                .is_ok_and(|signature| key.verify(input, &signature).is_ok()),
            Material::Ec(key) => p256::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|signature| key.verify(input, &signature).is_ok()),
        }
    }
}

/// The key's algorithm: its `alg`, which must agree with `kty`, or (JWKS
/// only) the one algorithm this filter supports for its `kty`.
fn key_alg(jwk: &Jwk, from_jwks: bool) -> Result<Alg, String> {
    let alg = match (jwk.alg.as_deref(), jwk.kty.as_deref()) {
        (Some(name), _) => Alg::parse(name).ok_or_else(|| {
            format!("unsupported alg {name:?} (supported: HS256, RS256, ES256; `none` is never accepted)")
        })?,
        (None, _) if !from_jwks => return Err("needs `alg` (HS256, RS256 or ES256)".into()),
        (None, Some("oct")) => Alg::Hs256,
        (None, Some("RSA")) => Alg::Rs256,
        (None, Some("EC")) => Alg::Es256,
        (None, Some(kty)) => return Err(format!("unsupported kty {kty:?} (supported: oct, RSA, EC)")),
        (None, None) => return Err("needs `kty` or `alg`".into()),
    };
    match jwk.kty.as_deref() {
        Some(kty) if kty != alg.kty() => Err(format!("alg {} needs kty {:?}, not {kty:?}", alg.name(), alg.kty())),
        _ => Ok(alg),
    }
}

fn hmac_material(jwk: &Jwk) -> Result<Material, String> {
    let secret = match (&jwk.k, &jwk.secret) {
        (Some(k), None) => decode(k, "k")?,
        (None, Some(secret)) => secret.as_bytes().to_vec(),
        (Some(_), Some(_)) => return Err("HS256 key has both `k` and `secret`; give one".into()),
        (None, None) => return Err("HS256 key needs `secret` (text) or `k` (base64url)".into()),
    };
    if secret.len() < MIN_HMAC_BYTES {
        return Err(format!("HS256 secret is {} bytes; it must be at least {MIN_HMAC_BYTES}", secret.len()));
    }
    Ok(Material::Hmac(secret))
}

fn rsa_material(jwk: &Jwk) -> Result<Material, String> {
    let (Some(n), Some(e)) = (&jwk.n, &jwk.e) else {
        return Err("RS256 key needs `n` and `e`".into());
    };
    let n = rsa::BigUint::from_bytes_be(&decode(n, "n")?);
    let e = rsa::BigUint::from_bytes_be(&decode(e, "e")?);
    if n.bits() < MIN_RSA_BITS {
        return Err(format!("RS256 key is {} bits; it must be at least {MIN_RSA_BITS}", n.bits()));
    }
    let key = rsa::RsaPublicKey::new(n, e).map_err(|e| format!("RS256 key is not a valid RSA public key: {e}"))?;
    Ok(Material::Rsa(Box::new(rsa::pkcs1v15::VerifyingKey::new(key))))
}

fn ec_material(jwk: &Jwk) -> Result<Material, String> {
    match jwk.crv.as_deref() {
        Some("P-256") | None => {}
        Some(crv) => return Err(format!("ES256 key needs crv \"P-256\", not {crv:?}")),
    }
    let (Some(x), Some(y)) = (&jwk.x, &jwk.y) else {
        return Err("ES256 key needs `x` and `y`".into());
    };
    let coordinate = |value: &str, member: &str| -> Result<p256::FieldBytes, String> {
        let bytes: [u8; 32] = decode(value, member)?
            .try_into()
            .map_err(|_| "ES256 key: `x` and `y` must be 32 bytes each".to_string())?;
        Ok(bytes.into())
    };
    let point = p256::EncodedPoint::from_affine_coordinates(&coordinate(x, "x")?, &coordinate(y, "y")?, false);
    p256::ecdsa::VerifyingKey::from_encoded_point(&point)
        .map(Material::Ec)
        .map_err(|_| "ES256 key: (`x`, `y`) is not a point on P-256".into())
}

/// Decodes base64url without padding, naming the member on failure.
fn decode(value: &str, member: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD.decode(value).map_err(|e| format!("`{member}` is not base64url without padding: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwk(json: &str) -> Jwk {
        serde_json::from_str(json).expect("jwk")
    }

    #[test]
    fn inline_keys_need_an_alg_and_matching_material() {
        let err = |json: &str| Key::load(&jwk(json), false).err().expect("refused");
        assert_eq!(err(r#"{"secret":"x"}"#), "needs `alg` (HS256, RS256 or ES256)");
        assert_eq!(err(r#"{"alg":"RS256","e":"AQAB"}"#), "RS256 key needs `n` and `e`");
        assert_eq!(err(r#"{"alg":"HS256","secret":"short"}"#), "HS256 secret is 5 bytes; it must be at least 32");
        assert!(err(r#"{"alg":"none"}"#).starts_with("unsupported alg \"none\""));
        assert_eq!(
            err(r#"{"alg":"HS256","kty":"RSA","n":"AQAB","e":"AQAB"}"#),
            "alg HS256 needs kty \"oct\", not \"RSA\""
        );
        assert!(err(r#"{"alg":"ES256","x":"AA","y":"AA"}"#).contains("32 bytes"));
        assert!(err(r#"{"kty":"RSA","d":"AA"}"#).contains("private key material"));
    }

    #[test]
    fn jwks_keys_take_their_alg_from_kty_and_skip_encryption_keys() {
        let secret = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let key =
            Key::load(&jwk(&format!(r#"{{"kty":"oct","k":"{secret}","kid":"a"}}"#)), true).expect("ok").expect("key");
        assert_eq!(key.alg, Alg::Hs256);
        assert!(Key::load(&jwk(r#"{"kty":"RSA","use":"enc"}"#), true).expect("ok").is_none());
        let mut mac = Hmac::<Sha256>::new_from_slice(&[7u8; 32]).expect("mac");
        mac.update(b"input");
        let sig = mac.finalize().into_bytes();
        assert!(key.verify(b"input", &sig));
        assert!(!key.verify(b"other", &sig));
    }
}
