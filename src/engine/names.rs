//! Names that arrive as text and are valid once parsed: collection names and ids, and realtime
//! channel names.

use std::fmt;

use uuid::Uuid;

/// `^[A-Za-z_][A-Za-z0-9_]{0,62}$` (DESIGN.md §9).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CollectionName(String);

impl CollectionName {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut chars = text.chars();
        let valid = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && text.len() <= 63
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(format!(
                "`{text}` is not a valid collection name: use 1 to 63 letters, digits or `_`, \
                 not starting with a digit"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CollectionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A new random id for a collection or a record: 15 characters of `[a-z0-9]` (PocketBase's shape).
pub fn random_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bits = Uuid::new_v4().as_u128();
    (0..15)
        .map(|_| {
            let c = ALPHABET[(bits % 36) as usize] as char;
            bits /= 36;
            c
        })
        .collect()
}

/// Which kind of Pusher channel a subscription is delivered on; fixed when it is made and
/// stored with it (DESIGN.md §15).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelPrivacy {
    /// A guest could have made it: anyone holding the name may listen.
    Public,
    /// `private-`: listening needs a channel authorization.
    Private,
    /// `private-encrypted-`: as private, and its events are sealed with the channel's key
    /// (the collection's `encrypted` option).
    Encrypted,
}

impl ChannelPrivacy {
    pub fn is_public(self) -> bool {
        self == ChannelPrivacy::Public
    }
}

/// Maps subscription ids to channel names and back: `{prefix}{uuid}` for public subscriptions,
/// `private-{prefix}{uuid}` or `private-encrypted-{prefix}{uuid}` on the Pusher side for the
/// others.
#[derive(Clone, Debug)]
pub struct ChannelNames {
    prefix: String,
}

impl ChannelNames {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// What subscribe returns (the client adds `private-` or `private-encrypted-`).
    pub fn channel(&self, id: Uuid) -> String {
        format!("{}{}", self.prefix, id.hyphenated())
    }

    /// The Pusher channel a subscription is delivered on.
    pub fn pusher_channel(&self, id: Uuid, privacy: ChannelPrivacy) -> String {
        match privacy {
            ChannelPrivacy::Public => self.channel(id),
            ChannelPrivacy::Private => format!("private-{}", self.channel(id)),
            ChannelPrivacy::Encrypted => format!("private-encrypted-{}", self.channel(id)),
        }
    }

    /// Whether `name` carries the realtime prefix (after any `private-` kind prefix).
    pub fn is_prefixed(&self, name: &str) -> bool {
        let name = name
            .strip_prefix("private-encrypted-")
            .or_else(|| name.strip_prefix("private-"))
            .unwrap_or(name);
        name.starts_with(self.prefix.as_str())
    }

    /// The subscription a name designates: the bare UUID (what Velo's own clients send),
    /// `{prefix}{uuid}` (what subscribe returns), or either with `private-` or
    /// `private-encrypted-` in front (DESIGN.md §11, §15).
    pub fn subscription_id(&self, name: &str) -> Option<Uuid> {
        let name = name
            .strip_prefix("private-encrypted-")
            .or_else(|| name.strip_prefix("private-"))
            .unwrap_or(name);
        let id = name.strip_prefix(self.prefix.as_str()).unwrap_or(name);
        // Only the hyphenated form subscribe hands out.
        (id.len() == 36).then(|| Uuid::try_parse(id).ok())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collection_names() {
        for ok in ["posts", "_x", "A1_b", &"a".repeat(63)] {
            assert!(CollectionName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1posts", "po-sts", "pöst", "a b", &"a".repeat(64)] {
            assert!(CollectionName::parse(bad).is_err(), "{bad}");
        }
        let id = random_id();
        assert_eq!(id.len(), 15);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
    }

    #[test]
    fn channel_names_round_trip() {
        let names = ChannelNames::new("velo.realtime.");
        let id = Uuid::new_v4();
        let channel = names.channel(id);
        assert!(channel.starts_with("velo.realtime."));
        assert_eq!(names.subscription_id(&channel), Some(id));
        assert_eq!(
            names.subscription_id(&format!("private-{channel}")),
            Some(id)
        );
        assert_eq!(
            names.subscription_id(&format!("private-encrypted-{channel}")),
            Some(id)
        );
        assert_eq!(names.subscription_id(&id.to_string()), Some(id), "bare");
        assert_eq!(
            names.subscription_id(&format!("velo.other.{id}")),
            None,
            "another prefix"
        );
        assert_eq!(
            names.subscription_id(&format!("velo.realtime.{}", id.simple())),
            None
        );
        assert_eq!(names.subscription_id("velo.realtime.nope"), None);
        for privacy in [
            ChannelPrivacy::Public,
            ChannelPrivacy::Private,
            ChannelPrivacy::Encrypted,
        ] {
            let pusher_channel = names.pusher_channel(id, privacy);
            assert!(pusher_channel.ends_with(&channel), "{pusher_channel}");
            assert_eq!(names.subscription_id(&pusher_channel), Some(id));
        }
        assert_eq!(
            names.pusher_channel(id, ChannelPrivacy::Encrypted),
            format!("private-encrypted-{channel}")
        );
    }
}
