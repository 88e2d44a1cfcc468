//! The gateway's rate and count limits: token buckets per source IP for new
//! connections, the per-connection message meter, and the count of
//! unauthenticated connections per source.
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

/// A client rate-limited with less than this between refusals is still
/// flooding (SPEC §4.2: closed after `flood_close_after` of it).
const FLOOD_QUIET: Duration = Duration::from_secs(1);

/// What the message rate says about one more frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the rate.
    Pass,
    /// Over the rate: a request gets `RATE_LIMITED`, a control frame is
    /// only counted.
    Limited,
    /// Over the rate without a quiet second for the flood limit: close 1008.
    Flooding,
}

/// One connection's message rate (`--message-rate`, `--message-burst`):
/// every frame it sends, control frames and pre-`connect` frames included,
/// takes a token.
#[derive(Debug)]
pub struct Meter {
    rate: Rate,
    bucket: TokenBucket,
    close_after: Duration,
    /// Start of the current run of refusals with no quiet second between.
    flood_since: Option<Instant>,
    last_limited: Option<Instant>,
}

impl Meter {
    /// A full bucket at `rate`; flooding for `close_after` closes.
    pub fn new(rate: Rate, close_after: Duration, now: Instant) -> Meter {
        Meter { rate, bucket: TokenBucket::full(rate, now), close_after, flood_since: None, last_limited: None }
    }

    /// Takes a token for one frame.
    pub fn take(&mut self, now: Instant) -> Verdict {
        if self.bucket.take(self.rate, now).is_ok() {
            return Verdict::Pass;
        }
        if self.last_limited.is_none_or(|t| now.saturating_duration_since(t) >= FLOOD_QUIET) {
            self.flood_since = Some(now);
        }
        self.last_limited = Some(now);
        let flooding_for = self.flood_since.map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        if flooding_for >= self.close_after { Verdict::Flooding } else { Verdict::Limited }
    }
}

/// `Retry-After` for a source at its unauthenticated-connection bound:
/// about what a real client's handshake takes.
pub const PREAUTH_RETRY: Duration = Duration::from_secs(1);

/// Connections from one source (IPv6 by /64) that have not completed
/// `connect` (SPEC §5), so a few addresses cannot hold every slot through
/// the handshake timeout. Holds an entry only while its count is above
/// zero, so it never has more entries than there are connections.
#[derive(Debug)]
pub struct PreAuth {
    max_per_source: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl PreAuth {
    /// At most `max_per_source` at once per source.
    pub fn new(max_per_source: usize) -> PreAuth {
        PreAuth { max_per_source, counts: Mutex::new(HashMap::new()) }
    }

    /// Counts one more unauthenticated connection from `ip`; false (and
    /// nothing counted) if that source already has its maximum.
    pub fn enter(&self, ip: IpAddr) -> bool {
        let mut counts = self.counts.lock();
        let count = counts.entry(source_key(ip)).or_insert(0);
        if *count >= self.max_per_source {
            return false;
        }
        *count += 1;
        true
    }

    /// One connection from `ip` authenticated or ended.
    pub fn leave(&self, ip: IpAddr) {
        let mut counts = self.counts.lock();
        let key = source_key(ip);
        if let Some(count) = counts.get_mut(&key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&key);
                shrink_if_sparse(&mut counts);
            }
        }
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
    fn a_meter_limits_then_closes_a_flood_and_forgives_a_quiet_second() {
        let t0 = Instant::now();
        let mut meter = Meter::new(Rate::new(1.0, 2), Duration::from_secs(3), t0);
        assert_eq!((meter.take(t0), meter.take(t0), meter.take(t0)), (Verdict::Pass, Verdict::Pass, Verdict::Limited));
        // A frame every 50 ms: refused without a quiet second, closed after 3 s.
        let flooding = (1..100)
            .map(|i| t0 + Duration::from_millis(50 * i))
            .find(|&t| meter.take(t) == Verdict::Flooding)
            .map(|t| t - t0);
        assert!(
            flooding.is_some_and(|d| d >= Duration::from_secs(3) && d < Duration::from_millis(3100)),
            "{flooding:?}"
        );
        // Over the rate but with a quiet second between runs: never closed.
        let mut meter = Meter::new(Rate::new(1.0, 1), Duration::from_secs(3), t0);
        for s in 0..10 {
            let t = t0 + Duration::from_millis(1100 * s);
            meter.take(t);
            assert_ne!(meter.take(t), Verdict::Flooding);
        }
    }

    #[test]
    fn pre_auth_bounds_each_source_and_forgets_it() {
        let pre = PreAuth::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let b_sibling: IpAddr = "2001:db8::2".parse().unwrap();
        assert!(pre.enter(a) && pre.enter(a) && !pre.enter(a));
        assert!(pre.enter(b) && pre.enter(b_sibling) && !pre.enter(b));
        pre.leave(a);
        assert!(pre.enter(a));
        for ip in [a, a, b, b_sibling, b] {
            pre.leave(ip);
        }
        assert!(pre.counts.lock().is_empty());
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
