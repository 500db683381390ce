//! The one signature algorithm access tokens use, HS256, as jsonwebtoken's crypto provider.
//!
//! jsonwebtoken's bundled RustCrypto provider links RSA and elliptic-curve code (about 250 KiB
//! of every HTTP function's artifact) for algorithms this product never accepts; this provider
//! knows HMAC-SHA256 and refuses everything else, so a token naming another algorithm fails
//! verification here as well as in [`super::jwt`]'s own check.

use hmac::{Hmac, Mac};
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{new_error, ErrorKind, Result};
use jsonwebtoken::signature::{Error as SignatureError, Signer, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey};
use sha2::Sha256;

struct Hs256(Hmac<Sha256>);

impl Hs256 {
    fn new(algorithm: &Algorithm, family: AlgorithmFamily, secret: &[u8]) -> Result<Box<Self>> {
        if *algorithm != Algorithm::HS256 {
            return Err(new_error(ErrorKind::InvalidAlgorithm));
        }
        if family != AlgorithmFamily::Hmac {
            return Err(new_error(ErrorKind::InvalidKeyFormat));
        }
        let mac = Hmac::<Sha256>::new_from_slice(secret)
            .map_err(|_| new_error(ErrorKind::InvalidKeyFormat))?;
        Ok(Box::new(Self(mac)))
    }
}

impl Signer<Vec<u8>> for Hs256 {
    fn try_sign(&self, message: &[u8]) -> std::result::Result<Vec<u8>, SignatureError> {
        let mut mac = self.0.clone();
        mac.update(message);
        Ok(mac.finalize().into_bytes().to_vec())
    }
}

impl Verifier<Vec<u8>> for Hs256 {
    fn verify(
        &self,
        message: &[u8],
        signature: &Vec<u8>,
    ) -> std::result::Result<(), SignatureError> {
        let mut mac = self.0.clone();
        mac.update(message);
        // Constant-time comparison (hmac's verify_slice).
        mac.verify_slice(signature)
            .map_err(SignatureError::from_source)
    }
}

impl JwtSigner for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

impl JwtVerifier for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: |algorithm, key: &EncodingKey| {
        Ok(Hs256::new(algorithm, key.family(), key.as_bytes())? as Box<dyn JwtSigner>)
    },
    verifier_factory: |algorithm, key: &DecodingKey| {
        Ok(Hs256::new(algorithm, key.family(), key.try_get_as_bytes()?)? as Box<dyn JwtVerifier>)
    },
    // JWKs are never read: keys are shared secrets from Secrets Manager or the environment.
    key_utils: KeyUtils::new_unimplemented(),
};

/// Makes HS256 the process's provider; idempotent, and called before every sign and verify so no
/// path reaches jsonwebtoken without one.
pub(super) fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Err(installed) = PROVIDER.install_default() {
            // Only this module installs one; anything else is jsonwebtoken's placeholder, locked
            // in by a call before this one, and would refuse (panic on) every token.
            if !std::ptr::eq(installed, &PROVIDER) {
                tracing::error!("jsonwebtoken was used before its HS256 provider was installed");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, encode, Header, Validation};

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Claims {
        sub: String,
        exp: i64,
    }

    #[test]
    fn signs_and_verifies_hs256_and_refuses_other_algorithms() {
        install();
        let secret = b"0123456789abcdef0123456789abcdef";
        let claims = Claims {
            sub: "u".into(),
            exp: 4_000_000_000,
        };
        let token = encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap();
        let read = decode::<Claims>(
            &token,
            &DecodingKey::from_secret(secret),
            &Validation::new(Algorithm::HS256),
        )
        .unwrap();
        assert_eq!(read.claims, claims);

        // A different key fails, and so does any other algorithm.
        let wrong = decode::<Claims>(
            &token,
            &DecodingKey::from_secret(b"another secret, also thirty-two!"),
            &Validation::new(Algorithm::HS256),
        );
        assert_eq!(wrong.unwrap_err().kind(), &ErrorKind::InvalidSignature);
        let hs512 = encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(secret),
        );
        assert_eq!(hs512.unwrap_err().kind(), &ErrorKind::InvalidAlgorithm);
    }
}
