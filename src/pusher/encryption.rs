//! Encrypted channels (`private-encrypted-`): a channel's key, derived from the server's master
//! key as the Pusher server libraries derive it, and event data sealed with it (NaCl secretbox,
//! which pusher-js opens with tweetnacl).
//!
//! This module knows keys and bytes, not who may hold them: channel authorization decides that.

use base64::Engine as _;
use crypto_secretbox::XSalsa20Poly1305;
use crypto_secretbox::aead::{Aead, AeadCore, KeyInit, OsRng};
use sha2::Digest as _;

/// The secretbox key of one encrypted channel: SHA-256(channel name ‖ master key). A client
/// gets it as `shared_secret` when its channel authorization is signed.
#[derive(Clone)]
pub struct ChannelKey([u8; 32]);

impl ChannelKey {
    pub fn derive(channel: &str, master_key: &[u8; 32]) -> Self {
        let mut hash = sha2::Sha256::new();
        hash.update(channel.as_bytes());
        hash.update(master_key);
        Self(hash.finalize().into())
    }

    /// The key as the auth answer's `shared_secret`: base64.
    pub fn shared_secret(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    /// An event's `data` for the encrypted channel: the JSON text
    /// `{"nonce":b64,"ciphertext":b64}` of the secretbox of `plaintext` under a fresh random
    /// 24-byte nonce (from the operating system: a nonce must never repeat under one key).
    /// Its length is [`sealed_len`] of the plaintext's.
    pub fn seal(&self, plaintext: &str) -> String {
        let mut sealed = String::with_capacity(sealed_len(plaintext.len()));
        self.seal_into(plaintext, "\"", &mut sealed);
        sealed
    }

    /// Appends [`Self::seal`]'s text to `out`, each of its quotes written as `quote`: `"` for
    /// the text itself, `\"` for the text inside a JSON string literal (base64 needs no other
    /// escape), so that a frame is written in one go.
    pub(crate) fn seal_into(&self, plaintext: &str, quote: &str, out: &mut String) {
        let cipher = XSalsa20Poly1305::new(&self.0.into());
        let nonce = XSalsa20Poly1305::generate_nonce(&mut OsRng);
        let ciphertext = cipher
            .encrypt(&nonce, plaintext.as_bytes())
            .expect("secretbox encrypts any length an event can have");
        let b64 = base64::engine::general_purpose::STANDARD;
        for piece in ["{", quote, "nonce", quote, ":", quote] {
            out.push_str(piece);
        }
        b64.encode_string(nonce, out);
        for piece in [quote, ",", quote, "ciphertext", quote, ":", quote] {
            out.push_str(piece);
        }
        b64.encode_string(ciphertext, out);
        out.push_str(quote);
        out.push('}');
    }
}

impl std::fmt::Debug for ChannelKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChannelKey(..)")
    }
}

/// The length of [`ChannelKey::seal`]'s text for a plaintext of `plaintext_len` bytes, without
/// sealing it: the wrapper, the 24-byte nonce and the 16-byte tag plus the plaintext, in base64.
pub fn sealed_len(plaintext_len: usize) -> usize {
    let base64_len = |bytes: usize| bytes.div_ceil(3) * 4;
    r#"{"nonce":"","ciphertext":""}"#.len() + base64_len(24) + base64_len(plaintext_len + 16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crypto_secretbox::Nonce;

    #[test]
    fn sealed_data_opens_with_the_shared_secret() {
        let master = [7u8; 32];
        let key = ChannelKey::derive("private-encrypted-x", &master);
        let b64 = base64::engine::general_purpose::STANDARD;
        let secret: [u8; 32] = b64.decode(key.shared_secret()).unwrap().try_into().unwrap();
        let plaintext = r#"{"action":"created","record":{"id":"r1"}}"#;
        let sealed = key.seal(plaintext);
        assert_eq!(sealed.len(), sealed_len(plaintext.len()));
        let fields: serde_json::Value = serde_json::from_str(&sealed).unwrap();
        let nonce = b64.decode(fields["nonce"].as_str().unwrap()).unwrap();
        let ciphertext = b64.decode(fields["ciphertext"].as_str().unwrap()).unwrap();
        assert_eq!(nonce.len(), 24);
        let opened = XSalsa20Poly1305::new(&secret.into())
            .decrypt(Nonce::from_slice(&nonce), ciphertext.as_slice())
            .unwrap();
        assert_eq!(opened, plaintext.as_bytes());
        assert_ne!(key.seal(plaintext), sealed, "a fresh nonce each time");
        // Written inside a JSON string literal, it is the same text once unescaped.
        let mut literal = String::from("\"");
        key.seal_into(plaintext, "\\\"", &mut literal);
        literal.push('"');
        let unescaped: String = serde_json::from_str(&literal).unwrap();
        let fields: serde_json::Value = serde_json::from_str(&unescaped).unwrap();
        assert_eq!(fields.as_object().unwrap().len(), 2, "{literal}");
        assert_eq!(unescaped.len(), sealed_len(plaintext.len()));
    }

    #[test]
    fn keys_are_per_channel_and_per_master_key() {
        let a = ChannelKey::derive("private-encrypted-a", &[1; 32]).shared_secret();
        assert_ne!(
            a,
            ChannelKey::derive("private-encrypted-b", &[1; 32]).shared_secret()
        );
        assert_ne!(
            a,
            ChannelKey::derive("private-encrypted-a", &[2; 32]).shared_secret()
        );
        // SHA-256("private-encrypted-a" ‖ 32 × 0x01), computed with Node's crypto.
        assert_eq!(a, "yjmu1g49qmtd0S93gU5tAu+hLIJ2eKKs9ndCJlk1G0Q=");
    }
}
