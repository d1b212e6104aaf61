//! What one client may use, and who a client is: the per-client quotas and rates of the API
//! and the WebSocket endpoint (live subscriptions, subscribe requests per second, connections
//! per address), and the client's address behind trusted proxies.
//!
//! Plain counting under short mutexes: these run once per subscribe, connect or disconnect,
//! never per event. A limit of 0 means unlimited (DESIGN.md §15). Addresses are counted by
//! host: an IPv4 address, or an IPv6 address's /64 (one host usually holds a whole /64). This
//! module decides no status or Pusher code; its callers map a refusal to 429 or 4100.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::auth::Identity;

/// Who a per-client limit counts against: a signed-in user by id (wherever they connect
/// from), a guest by address. The admin is never limited.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ClientKey {
    User(String),
    Address(IpAddr),
}

impl ClientKey {
    /// Who `identity`, calling from `address`, counts as: none for the admin.
    pub fn of(identity: &Identity, address: IpAddr) -> Option<ClientKey> {
        match identity {
            Identity::User(user) => Some(ClientKey::User(user.id.clone())),
            Identity::Guest => Some(ClientKey::Address(host(address))),
            Identity::Superuser => None,
        }
    }
}

/// The host an address stands for, as the per-address limits count it: IPv4 addresses as
/// they are, IPv6 addresses by their /64 (the rest of the address is the host's to choose).
pub fn host(address: IpAddr) -> IpAddr {
    match canonical(address) {
        IpAddr::V6(v6) => IpAddr::V6((v6.to_bits() & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientKey::User(id) => write!(f, "user {id}"),
            ClientKey::Address(address) => write!(f, "address {address}"),
        }
    }
}

/// What one client may use of the API (0: unlimited).
#[derive(Clone, Debug)]
pub struct ClientLimits {
    /// Live subscriptions per client.
    pub max_subscriptions: usize,
    /// Subscribe requests per second per client.
    pub subscribes_per_second: u32,
}

/// A count of live things per key, up to a maximum (0: unlimited).
pub struct Quota<K> {
    max: usize,
    counts: Mutex<HashMap<K, usize>>,
}

/// The key already holds its maximum.
#[derive(Debug, PartialEq, Eq)]
pub struct QuotaExceeded {
    pub max: usize,
}

impl<K: Eq + Hash + Clone> Quota<K> {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            counts: Mutex::default(),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<K, usize>> {
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts one more for `key`, unless it is at the maximum.
    pub fn take(&self, key: &K) -> Result<(), QuotaExceeded> {
        let mut counts = self.counts();
        let count = counts.entry(key.clone()).or_insert(0);
        if self.max != 0 && *count >= self.max {
            return Err(QuotaExceeded { max: self.max });
        }
        *count += 1;
        Ok(())
    }

    /// Counts one more for `key` whatever the maximum (things that exist already, such as
    /// subscriptions loaded at start-up).
    pub fn add(&self, key: &K) {
        *self.counts().entry(key.clone()).or_insert(0) += 1;
    }

    /// One fewer for `key`; keys at zero are forgotten.
    pub fn give_back(&self, key: &K) {
        let mut counts = self.counts();
        if let Some(count) = counts.get_mut(key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(key);
            }
        }
    }

    #[cfg(test)]
    fn count(&self, key: &K) -> usize {
        self.counts().get(key).copied().unwrap_or(0)
    }
}

/// Requests per second per key: a token bucket holding one second's worth (so a burst of
/// `per_second` requests passes at once, then they pass at that rate). 0: unlimited.
pub struct Rate {
    per_second: u32,
    buckets: Mutex<Buckets>,
}

struct Buckets {
    by_key: HashMap<ClientKey, Bucket>,
    swept: Instant,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// How long until the key may make a request again.
#[derive(Debug, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Whole seconds, at least 1, for a `Retry-After` header.
    pub fn seconds(&self) -> u64 {
        self.0.as_secs_f64().ceil().max(1.0) as u64
    }
}

impl Rate {
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second,
            buckets: Mutex::new(Buckets {
                by_key: HashMap::new(),
                swept: Instant::now(),
            }),
        }
    }

    /// Takes one request's token for `key` at `now`.
    pub fn check(&self, key: &ClientKey, now: Instant) -> Result<(), RetryAfter> {
        if self.per_second == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_second);
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // A bucket that has been refilling for a second is full, the same as no bucket: forget
        // those now and then, so that memory follows the clients of the last second.
        if now.duration_since(buckets.swept) >= Duration::from_secs(1) {
            buckets
                .by_key
                .retain(|_, bucket| now.duration_since(bucket.at) < Duration::from_secs(1));
            buckets.swept = now;
        }
        let bucket = buckets.by_key.entry(key.clone()).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * capacity;
        bucket.tokens = (bucket.tokens + refill).min(capacity);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(RetryAfter(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / capacity,
            )))
        }
    }
}

/// An address or network (`10.0.0.0/8`, `::1`) whose `X-Forwarded-For` is believed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedProxy {
    network: IpAddr,
    prefix: u8,
}

impl TrustedProxy {
    pub fn parse(text: &str) -> Result<Self, String> {
        let invalid = || format!("`{text}` is not an IP address or network (`10.0.0.0/8`)");
        let (address, prefix) = match text.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text.trim(), None),
        };
        let network: IpAddr = address.parse().map_err(|_| invalid())?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|prefix| *prefix <= bits)
                .ok_or_else(invalid)?,
        };
        Ok(Self { network, prefix })
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        let (network, address, bits) = match (self.network, canonical(address)) {
            (IpAddr::V4(network), IpAddr::V4(address)) => (
                u128::from(network.to_bits()),
                u128::from(address.to_bits()),
                32,
            ),
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                (network.to_bits(), address.to_bits(), 128)
            }
            _ => return false,
        };
        let host_bits = bits - u32::from(self.prefix);
        (network ^ address).checked_shr(host_bits).unwrap_or(0) == 0
    }
}

/// Proxies whose `X-Forwarded-For` is believed, and who the client of a request is.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Vec<TrustedProxy>);

impl TrustedProxies {
    pub fn new(proxies: Vec<TrustedProxy>) -> Self {
        Self(proxies)
    }

    /// The address of the client that made `request`: see [`client_address`]. Every
    /// `X-Forwarded-For` line counts, in order (a proxy may add its own line rather than
    /// extend the client's).
    pub fn client_address(&self, request: &poem::Request) -> IpAddr {
        let peer = request
            .remote_addr()
            .as_socket_addr()
            .map_or(IpAddr::from([0, 0, 0, 0]), SocketAddr::ip);
        self.forwarded(peer, request.headers())
    }

    /// The client behind `peer`, given a request's headers.
    fn forwarded(&self, peer: IpAddr, headers: &poem::http::HeaderMap) -> IpAddr {
        if self.0.is_empty() {
            return canonical(peer);
        }
        let forwarded_for: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|line| line.to_str().ok())
            .collect();
        client_address(peer, Some(&forwarded_for.join(",")), &self.0)
    }
}

/// IPv4 addresses mapped into IPv6 (`::ffff:1.2.3.4`) as the IPv4 address they are.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        IpAddr::V4(_) => address,
    }
}

/// The client's address: the peer's, or, when the peer is a trusted proxy, the last address
/// in `X-Forwarded-For` that is not itself a trusted proxy (the one a trusted proxy saw).
pub fn client_address(
    peer: IpAddr,
    forwarded_for: Option<&str>,
    trusted: &[TrustedProxy],
) -> IpAddr {
    let is_trusted = |address: IpAddr| trusted.iter().any(|proxy| proxy.contains(address));
    let peer = canonical(peer);
    if !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    for hop in forwarded_for.unwrap_or_default().rsplit(',') {
        let Ok(address) = hop.trim().parse::<IpAddr>() else {
            break;
        };
        client = canonical(address);
        if !is_trusted(client) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_quota_counts_up_to_its_maximum() {
        let quota = Quota::new(2);
        let key = ClientKey::User("alice".into());
        assert_eq!(quota.take(&key), Ok(()));
        assert_eq!(quota.take(&key), Ok(()));
        assert_eq!(quota.take(&key), Err(QuotaExceeded { max: 2 }));
        assert_eq!(quota.take(&ClientKey::User("bob".into())), Ok(()));
        quota.give_back(&key);
        assert_eq!(quota.take(&key), Ok(()));
        quota.add(&key);
        assert_eq!(quota.count(&key), 3);
        let unlimited = Quota::new(0);
        for _ in 0..1000 {
            assert_eq!(unlimited.take(&key), Ok(()));
        }
    }

    #[test]
    fn a_rate_passes_a_seconds_burst_then_refills() {
        let rate = Rate::new(4);
        let key = ClientKey::Address(ip("10.0.0.1"));
        let start = Instant::now();
        for _ in 0..4 {
            assert_eq!(rate.check(&key, start), Ok(()));
        }
        let refused = rate.check(&key, start).unwrap_err();
        assert_eq!(refused, RetryAfter(Duration::from_millis(250)));
        assert_eq!(refused.seconds(), 1);
        assert!(
            rate.check(&ClientKey::Address(ip("10.0.0.2")), start)
                .is_ok(),
            "per key"
        );
        assert_eq!(rate.check(&key, start + Duration::from_millis(250)), Ok(()));
        assert!(
            rate.check(&key, start + Duration::from_millis(260))
                .is_err()
        );
        let unlimited = Rate::new(0);
        for _ in 0..1000 {
            assert_eq!(unlimited.check(&key, start), Ok(()));
        }
    }

    #[test]
    fn forgotten_buckets_are_full_ones() {
        let rate = Rate::new(1);
        let start = Instant::now();
        for n in 0..100u8 {
            let key = ClientKey::Address(IpAddr::from([10, 0, 0, n]));
            assert!(rate.check(&key, start).is_ok());
        }
        let later = start + Duration::from_secs(2);
        assert!(rate.check(&ClientKey::User("x".into()), later).is_ok());
        let buckets = rate.buckets.lock().unwrap();
        assert_eq!(buckets.by_key.len(), 1, "the full buckets were swept");
    }

    #[test]
    fn addresses_count_by_host() {
        assert_eq!(host(ip("203.0.113.7")), ip("203.0.113.7"));
        assert_eq!(host(ip("::ffff:203.0.113.7")), ip("203.0.113.7"));
        assert_eq!(host(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            host(ip("2001:db8:1:2:bbbb::9")),
            host(ip("2001:db8:1:2::1"))
        );
        assert_ne!(host(ip("2001:db8:1:3::1")), host(ip("2001:db8:1:2::1")));
    }

    #[test]
    fn every_forwarded_for_line_counts() {
        let proxies = TrustedProxies::new(vec![TrustedProxy::parse("127.0.0.1").unwrap()]);
        let request = poem::Request::builder()
            .header("x-forwarded-for", "198.51.100.66")
            .header("x-forwarded-for", "203.0.113.7")
            .finish();
        assert_eq!(
            proxies.forwarded(ip("127.0.0.1"), request.headers()),
            ip("203.0.113.7"),
            "the proxy's own line, not the one the client forged"
        );
    }

    #[test]
    fn trusted_proxies_and_forwarded_addresses() {
        let trusted: Vec<TrustedProxy> = ["10.0.0.0/8", "::1", "fd00::/8"]
            .iter()
            .map(|text| TrustedProxy::parse(text).unwrap())
            .collect();
        assert!(TrustedProxy::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxy::parse("proxy.local").is_err());
        assert!(trusted[0].contains(ip("10.200.3.4")));
        assert!(trusted[0].contains(ip("::ffff:10.1.1.1")), "IPv4-mapped");
        assert!(!trusted[0].contains(ip("11.0.0.1")));
        assert!(trusted[2].contains(ip("fd12::1")));
        assert!(
            TrustedProxy::parse("0.0.0.0/0")
                .unwrap()
                .contains(ip("8.8.8.8"))
        );

        let xff = Some("203.0.113.7, 198.51.100.2, 10.0.0.5");
        // An untrusted peer's header is ignored: it could say anything.
        assert_eq!(
            client_address(ip("198.51.100.9"), xff, &trusted),
            ip("198.51.100.9")
        );
        // A trusted peer: the last hop that is not a trusted proxy.
        assert_eq!(
            client_address(ip("10.0.0.1"), xff, &trusted),
            ip("198.51.100.2")
        );
        assert_eq!(
            client_address(ip("::1"), Some("203.0.113.7"), &trusted),
            ip("203.0.113.7")
        );
        assert_eq!(
            client_address(ip("10.0.0.1"), None, &trusted),
            ip("10.0.0.1")
        );
        assert_eq!(
            client_address(ip("10.0.0.1"), Some("garbage, 10.0.0.2"), &trusted),
            ip("10.0.0.2"),
            "stops at what does not parse"
        );
    }
}
