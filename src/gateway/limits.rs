//! Token buckets: one per connection for requests, and a map of them per
//! source IP for new connections.
//!
//! The IP map is behind one `parking_lot` mutex, never does I/O while locked
//! and never holds more than [`MAX_BUCKETS`] keys: idle buckets are evicted,
//! and a flood of distinct addresses past the cap is refused, not remembered.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::util::shrink_if_sparse;

/// Most source keys remembered at once (48 bytes each with the key, in a
/// table of 32,768 slots at this size: ~1.6 MiB at most). Past it, unknown sources are refused until eviction
/// frees room: under a distributed flood the gateway protects its accept
/// path rather than its memory.
pub const MAX_BUCKETS: usize = 16_384;
/// A bucket that has been full this long carries no information and is
/// forgotten (SPEC §3).
pub const IDLE_EVICT_AFTER: Duration = Duration::from_secs(60);
/// When the map is at its cap, the shortest time between two scans for full
/// buckets to make room (each scan is O(MAX_BUCKETS)).
const FULL_SCAN_EVERY: Duration = Duration::from_secs(1);

/// A refill rate and a bucket size.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    per_sec: f64,
    burst: f64,
}

impl Rate {
    /// `per_sec` tokens per second, at most `burst` stored.
    pub fn new(per_sec: f64, burst: u32) -> Rate {
        Rate { per_sec, burst: f64::from(burst) }
    }
}

/// One token bucket. The rate is passed in, so a bucket is 24 bytes.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    stamp: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn full(rate: Rate, now: Instant) -> TokenBucket {
        TokenBucket { tokens: rate.burst, stamp: now }
    }

    /// Takes one token.
    ///
    /// # Errors
    /// The bucket is empty; the error is the wait until the next token.
    pub fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.stamp).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_sec).min(rate.burst);
        self.stamp = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate.per_sec))
        }
    }

    /// When this bucket is (or was) full again if nothing is taken.
    fn full_at(&self, rate: Rate) -> Instant {
        let missing = (rate.burst - self.tokens).max(0.0);
        self.stamp + Duration::from_secs_f64(missing / rate.per_sec)
    }
}

/// Per-source-IP buckets for new connections.
#[derive(Debug)]
pub struct IpLimiter {
    rate: Rate,
    inner: Mutex<Buckets>,
}

#[derive(Debug)]
struct Buckets {
    map: HashMap<IpAddr, TokenBucket>,
    last_full_scan: Option<Instant>,
}

impl IpLimiter {
    /// A limiter with an empty map.
    pub fn new(rate: Rate) -> IpLimiter {
        IpLimiter { rate, inner: Mutex::new(Buckets { map: HashMap::new(), last_full_scan: None }) }
    }

    /// Admits one new connection from `ip`.
    ///
    /// # Errors
    /// Over the limit, or the map is full of active sources: how long the
    /// client should wait (for `Retry-After`).
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let key = source_key(ip);
        let rate = self.rate;
        let mut buckets = self.inner.lock();
        if let Some(bucket) = buckets.map.get_mut(&key) {
            return bucket.take(rate, now);
        }
        if buckets.map.len() >= MAX_BUCKETS {
            let scan_due = buckets.last_full_scan.is_none_or(|t| now.duration_since(t) >= FULL_SCAN_EVERY);
            if scan_due {
                buckets.last_full_scan = Some(now);
                // A full bucket behaves exactly like a new one: dropping it loses nothing.
                buckets.map.retain(|_, b| b.full_at(rate) > now);
            }
            if buckets.map.len() >= MAX_BUCKETS {
                return Err(FULL_SCAN_EVERY);
            }
        }
        let mut bucket = TokenBucket::full(rate, now);
        let taken = bucket.take(rate, now);
        buckets.map.insert(key, bucket);
        taken
    }

    /// Forgets buckets that have been full for [`IDLE_EVICT_AFTER`]; called
    /// periodically by the heartbeat thread.
    pub fn evict_idle(&self, now: Instant) {
        let rate = self.rate;
        let map = &mut self.inner.lock().map;
        map.retain(|_, b| now.saturating_duration_since(b.full_at(rate)) < IDLE_EVICT_AFTER);
        shrink_if_sparse(map);
    }

    /// Number of sources remembered.
    pub fn len(&self) -> usize {
        self.inner.lock().map.len()
    }
}

/// The key a source is limited by: IPv4 as is (IPv4-mapped IPv6 included),
/// IPv6 by its /64, since one host usually owns a whole /64.
fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_rate() {
        let rate = Rate::new(2.0, 3);
        let t0 = Instant::now();
        let mut bucket = TokenBucket::full(rate, t0);
        for _ in 0..3 {
            assert!(bucket.take(rate, t0).is_ok());
        }
        let wait = bucket.take(rate, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(bucket.take(rate, t0 + Duration::from_millis(499)).is_err());
        assert!(bucket.take(rate, t0 + Duration::from_millis(1000)).is_ok());
    }

    #[test]
    fn keys() {
        let cases = [
            ("10.0.0.1", "10.0.0.1"),
            ("::ffff:10.0.0.1", "10.0.0.1"),
            ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::"),
            ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::"),
        ];
        for (ip, key) in cases {
            assert_eq!(source_key(ip.parse().unwrap()).to_string(), key, "{ip}");
        }
    }

    #[test]
    fn eviction_gives_the_table_back() {
        let limiter = IpLimiter::new(Rate::new(1000.0, 1000));
        let t0 = Instant::now();
        for i in 0..1000u32 {
            assert!(limiter.check(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000u32 + i)), t0).is_ok());
        }
        assert!(limiter.inner.lock().map.capacity() >= 1000);
        limiter.evict_idle(t0 + Duration::from_secs(120));
        assert_eq!(limiter.len(), 0);
        assert!(limiter.inner.lock().map.capacity() <= 128, "a burst of sources keeps its table forever");
    }

    #[test]
    fn limiter_limits_evicts_and_caps() {
        let limiter = IpLimiter::new(Rate::new(1.0, 2));
        let t0 = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(limiter.check(ip, t0).is_ok());
        assert!(limiter.check(ip, t0).is_ok());
        assert!(limiter.check(ip, t0).is_err());
        // Full again at t0+2s; forgotten a minute after that.
        limiter.evict_idle(t0 + Duration::from_secs(61));
        assert_eq!(limiter.len(), 1);
        limiter.evict_idle(t0 + Duration::from_secs(62));
        assert_eq!(limiter.len(), 0);

        // Fill the map with active (non-full) sources: newcomers are refused.
        for i in 0..MAX_BUCKETS as u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000u32 + i));
            assert!(limiter.check(ip, t0).is_ok());
        }
        assert_eq!(limiter.len(), MAX_BUCKETS);
        assert!(limiter.check(IpAddr::from([198, 51, 100, 1]), t0).is_err());
        // Once those buckets are full again, room is made on demand.
        let later = t0 + Duration::from_secs(5);
        assert!(limiter.check(IpAddr::from([198, 51, 100, 1]), later).is_ok());
        assert!(limiter.len() <= MAX_BUCKETS);
    }
}
