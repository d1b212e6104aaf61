//! HMAC-SHA256 signatures of the Pusher protocol (PUSHER.md §6, §9): channel authorizations
//! (`key:hex`) and signed HTTP API requests. Comparisons are constant-time.

use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;

use crate::auth::constant_time_eq;

type HmacSha256 = Hmac<Sha256>;

/// An app's key and secret.
#[derive(Clone)]
pub struct AppCredentials {
    pub id: String,
    pub key: String,
    secret: String,
}

impl AppCredentials {
    pub fn new(id: &str, key: &str, secret: &str) -> Self {
        Self {
            id: id.to_owned(),
            key: key.to_owned(),
            secret: secret.to_owned(),
        }
    }

    /// A webhook's `X-Pusher-Signature`: hex HMAC-SHA256 of the raw body (PUSHER.md §12).
    pub fn webhook_signature(&self, body: &[u8]) -> String {
        let mut mac = HmacSha256::new_from_slice(self.secret.as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    /// Checks a webhook's `X-Pusher-Key` and `X-Pusher-Signature`.
    pub fn verify_webhook(&self, key: &str, body: &[u8], signature: &str) -> bool {
        constant_time_eq(key.as_bytes(), self.key.as_bytes())
            && constant_time_eq(
                signature.as_bytes(),
                self.webhook_signature(body).as_bytes(),
            )
    }

    fn hex_hmac(&self, message: &str) -> String {
        let mut mac = HmacSha256::new_from_slice(self.secret.as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(message.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// The authorization of `socket_id` on a private channel: `key:hex(hmac(socket_id:channel))`.
    /// Presence channels sign `socket_id:channel:channel_data`.
    pub fn authorize(&self, socket_id: &str, channel: &str, channel_data: Option<&str>) -> String {
        let message = match channel_data {
            Some(data) => format!("{socket_id}:{channel}:{data}"),
            None => format!("{socket_id}:{channel}"),
        };
        format!("{}:{}", self.key, self.hex_hmac(&message))
    }

    /// A user sign-in: `key:hex(hmac("{socket_id}::user::{user_data}"))`.
    pub fn authorize_user(&self, socket_id: &str, user_data: &str) -> String {
        let message = format!("{socket_id}::user::{user_data}");
        format!("{}:{}", self.key, self.hex_hmac(&message))
    }

    /// Checks an `auth` a client presented when subscribing.
    pub fn verify(
        &self,
        auth: &str,
        socket_id: &str,
        channel: &str,
        channel_data: Option<&str>,
    ) -> bool {
        let expected = self.authorize(socket_id, channel, channel_data);
        constant_time_eq(auth.as_bytes(), expected.as_bytes())
    }

    /// The signature of an HTTP API request: `hex(hmac("METHOD\nPATH\nsorted query"))`, the
    /// query being every parameter but `auth_signature`, keys lowercased, values unescaped.
    pub fn request_signature(
        &self,
        method: &str,
        path: &str,
        params: &[(String, String)],
    ) -> String {
        let mut params: Vec<(String, &str)> = params
            .iter()
            .filter(|(key, _)| key != "auth_signature")
            .map(|(key, value)| (key.to_ascii_lowercase(), value.as_str()))
            .collect();
        params.sort();
        let query: Vec<String> = params
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        self.hex_hmac(&format!("{method}\n{path}\n{}", query.join("&")))
    }

    pub fn verify_request(
        &self,
        method: &str,
        path: &str,
        params: &[(String, String)],
        signature: &str,
    ) -> bool {
        constant_time_eq(
            self.request_signature(method, path, params).as_bytes(),
            signature.as_bytes(),
        )
    }
}

pub fn body_md5(body: &[u8]) -> String {
    hex::encode(Md5::digest(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PUSHER.md §6 and §9.
    fn vectors() -> AppCredentials {
        AppCredentials::new("3", "278d425bdf160c739803", "7ad3773142a6692b25b8")
    }

    #[test]
    fn channel_signatures_match_the_published_vectors() {
        let app = vectors();
        assert_eq!(
            app.authorize("1234.1234", "private-foobar", None),
            "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
        let presence = r#"{"user_id":10,"user_info":{"name":"Mr. Pusher"}}"#;
        assert_eq!(
            app.authorize("1234.1234", "presence-foobar", Some(presence)),
            "278d425bdf160c739803:afaed3695da2ffd16931f457e338e6c9f2921fa133ce7dac49f529792be6304c"
        );
        let auth = app.authorize("1234.1234", "private-foobar", None);
        assert!(app.verify(&auth, "1234.1234", "private-foobar", None));
        assert!(!app.verify(&auth, "1234.1235", "private-foobar", None));
        assert!(!app.verify(&auth, "1234.1234", "private-foobaz", None));
        assert!(!app.verify("", "1234.1234", "private-foobar", None));
    }

    #[test]
    fn request_signatures_match_the_published_vector() {
        let app = vectors();
        let body = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        assert_eq!(body_md5(body), "ec365a775a4cd0599faeb73354201b6f");
        let params: Vec<(String, String)> = [
            ("auth_key", "278d425bdf160c739803"),
            ("auth_timestamp", "1353088179"),
            ("auth_version", "1.0"),
            ("body_md5", "ec365a775a4cd0599faeb73354201b6f"),
            ("auth_signature", "ignored"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let expected = "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c";
        assert_eq!(
            app.request_signature("POST", "/apps/3/events", &params),
            expected
        );
        assert!(app.verify_request("POST", "/apps/3/events", &params, expected));
        assert!(!app.verify_request("GET", "/apps/3/events", &params, expected));
    }
}
