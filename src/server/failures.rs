//! Failure limits keyed on what a request claims: failed attempts (bad signatures, a wrong
//! secret for an enrolled app id, the admin token given as an agent secret) are counted per
//! (source, app id), per app id and per source over fixed one-minute windows, and wrong admin
//! tokens per source and in all. Each app id's last good source (the address of its last
//! request that proved the right to it) is remembered, so that a host sharing an address with a
//! failing one (behind a NAT or a proxy) is still verified, and its right signature accepted.
//! Everything lives in memory, in maps of bounded size. Servers sharing a PostgreSQL database
//! add what the others counted (`shared_limits.rs` exchanges the counts): a count here is the
//! server's own plus the others' of the same minute.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::Duration;

use thiserror::Error;

use crate::protocol::limits::{
    MAX_FAILURES_PER_APP_ID, MAX_FAILURES_PER_APP_ID_SOURCE, MAX_FAILURES_PER_MINUTE,
    MAX_WRONG_ADMIN_TOKENS_PER_MINUTE,
};
use crate::protocol::wire;
use crate::server::store::SharedCount;

/// How long a failure over a limit waits before it is answered, when it must be answered at all
/// (an agent's own address, a wrong admin token): it slows guessing without refusing the right
/// credential. The wait holds no place among the requests being handled.
pub const TARPIT: Duration = Duration::from_secs(1);
/// Length of a counting window.
const WINDOW_SECS: i64 = 60;
/// Most keys one count keeps; past it, keys of past windows are dropped, and if the current
/// window alone fills it, new keys go uncounted (the other counts of a request still hold).
const MAX_COUNTED_KEYS: usize = 65_536;
/// Most keys of one count shared with the other servers per exchange; the rest wait for the
/// next one.
const MAX_SHARED_PER_EXCHANGE: usize = 1024;
/// Most app ids whose last good source is remembered.
const MAX_GOOD_SOURCES: usize = 262_144;
/// A remembered good source unused for this long may make room for another.
const GOOD_SOURCE_IDLE_SECS: i64 = 3600;

/// Too many failures under one key: requests under it are refused, or answered slowly.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("too many {what} {scope} ({count} this minute); retry in {retry_in} s")]
pub struct TooManyFailures {
    /// What failed, e.g. `failed attempts`.
    pub what: &'static str,
    /// Whose count is over: `from 127.0.0.1`, `for app id "h1"`, ...
    pub scope: Scope,
    /// Failures counted in this window.
    pub count: u32,
    /// Seconds until the window ends.
    pub retry_in: i64,
}

/// Whose count went over its limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One source address for one app id.
    SourceAppId(IpAddr, String),
    /// One app id, from every source.
    AppId(String),
    /// One source address.
    Source(IpAddr),
    /// Every source together.
    Everyone,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::SourceAppId(source, app_id) => {
                write!(f, "for app id {:?} from {source}", wire::shown(app_id))
            }
            Scope::AppId(app_id) => write!(f, "for app id {:?}", wire::shown(app_id)),
            Scope::Source(source) => write!(f, "from {source}"),
            Scope::Everyone => write!(f, "from all sources"),
        }
    }
}

/// How a signed request is handled, given the failures counted so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Under every limit: verified; a failure is answered at once.
    Clear,
    /// Over a limit, but from its app id's last good source: verified (a right signature is
    /// accepted); a failure is answered after [`TARPIT`].
    Tarpit,
}

/// The window of `now_secs` and the seconds left in it.
fn window(now_secs: i64) -> (i64, i64) {
    (now_secs.div_euclid(WINDOW_SECS), WINDOW_SECS - now_secs.rem_euclid(WINDOW_SECS))
}

/// The counting window (the minute) of `now_secs`, as the counts shared between servers name it.
pub fn minute(now_secs: i64) -> i64 {
    window(now_secs).0
}

/// A counted key as bytes, for the counts shared between servers.
trait SharedKey: Sized {
    fn to_bytes(&self) -> Vec<u8>;
    fn from_bytes(bytes: &[u8]) -> Option<Self>;
}

impl SharedKey for IpAddr {
    fn to_bytes(&self) -> Vec<u8> {
        let v6 = match self {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => *v6,
        };
        v6.octets().to_vec()
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let octets: [u8; 16] = bytes.try_into().ok()?;
        Some(Ipv6Addr::from(octets).to_canonical())
    }
}

impl SharedKey for String {
    fn to_bytes(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        String::from_utf8(bytes.to_vec()).ok()
    }
}

impl SharedKey for (IpAddr, String) {
    fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = self.0.to_bytes();
        bytes.extend_from_slice(self.1.as_bytes());
        bytes
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let (source, app_id) = bytes.split_at_checked(16)?;
        Some((IpAddr::from_bytes(source)?, String::from_bytes(app_id)?))
    }
}

impl SharedKey for () {
    fn to_bytes(&self) -> Vec<u8> {
        Vec::new()
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.is_empty().then_some(())
    }
}

/// The kinds of count shared between servers, as stored.
mod kind {
    pub const PAIR: u8 = 1;
    pub const APP_ID: u8 = 2;
    pub const SOURCE: u8 = 3;
    pub const TOKEN_SOURCE: u8 = 4;
    pub const TOKEN_EVERYONE: u8 = 5;
}

/// The key a source is counted under: an IPv4 address (also when mapped into IPv6) as it is, an
/// IPv6 address by its /64 prefix, the block one host usually holds.
pub fn source_key(source: IpAddr) -> IpAddr {
    match source.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

/// Failures per key in the current window, with a limit; bounded in size. With other servers,
/// also what they counted in the window and which keys changed here since the last exchange.
struct Counts<K> {
    limit: u32,
    counts: HashMap<K, (i64, u32)>,
    /// Keys counted here since they were last shared.
    unshared: HashSet<K>,
    /// The window the other servers' counts are of, and the counts.
    others: (i64, HashMap<K, u32>),
}

impl<K: Hash + Eq + Clone> Counts<K> {
    fn new(limit: u32) -> Self {
        Counts { limit, counts: HashMap::new(), unshared: HashSet::new(), others: (i64::MIN, HashMap::new()) }
    }

    /// The count of `key` in `window` (this server's and the others'), if it reached the limit.
    fn over(&self, key: &K, window: i64) -> Option<u32> {
        let own = match self.counts.get(key) {
            Some(&(w, count)) if w == window => count,
            _ => 0,
        };
        let others = if self.others.0 == window { self.others.1.get(key).copied().unwrap_or(0) } else { 0 };
        let count = own.saturating_add(others);
        (count >= self.limit).then_some(count)
    }

    fn add(&mut self, key: K, window: i64) {
        if self.counts.len() >= MAX_COUNTED_KEYS && !self.counts.contains_key(&key) {
            self.counts.retain(|_, (w, _)| *w == window);
            if self.counts.len() >= MAX_COUNTED_KEYS {
                return;
            }
        }
        if self.unshared.len() < MAX_COUNTED_KEYS {
            self.unshared.insert(key.clone());
        }
        let entry = self.counts.entry(key).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

impl<K: Hash + Eq + Clone + SharedKey> Counts<K> {
    /// This server's counts in `window` of the keys counted since the last call (at most
    /// [`MAX_SHARED_PER_EXCHANGE`]), as `kind`, to share with the other servers.
    fn take_unshared(&mut self, kind: u8, window: i64, into: &mut Vec<SharedCount>) {
        let keys: Vec<K> = self.unshared.iter().take(MAX_SHARED_PER_EXCHANGE).cloned().collect();
        for key in keys {
            self.unshared.remove(&key);
            if let Some(&(_, count)) = self.counts.get(&key).filter(|(w, _)| *w == window) {
                into.push(SharedCount { kind, key: key.to_bytes(), count });
            }
        }
    }

    /// Takes the other servers' counts in `window`: those in `shared` of `kind`.
    fn set_others(&mut self, kind: u8, window: i64, shared: &[SharedCount]) {
        let counts = shared
            .iter()
            .filter(|count| count.kind == kind)
            .filter_map(|count| Some((K::from_bytes(&count.key)?, count.count)))
            .take(MAX_COUNTED_KEYS)
            .collect();
        self.others = (window, counts);
    }
}

/// The counts of failed agent attempts and the last good source of each app id.
struct AgentCounts {
    pair: Counts<(IpAddr, String)>,
    app_id: Counts<String>,
    source: Counts<IpAddr>,
    good: HashMap<String, (IpAddr, i64)>,
}

/// Failure limits of the agent endpoints.
pub struct AgentFailures {
    state: Mutex<AgentCounts>,
}

impl Default for AgentFailures {
    fn default() -> Self {
        AgentFailures {
            state: Mutex::new(AgentCounts {
                pair: Counts::new(MAX_FAILURES_PER_APP_ID_SOURCE),
                app_id: Counts::new(MAX_FAILURES_PER_APP_ID),
                source: Counts::new(MAX_FAILURES_PER_MINUTE),
                good: HashMap::new(),
            }),
        }
    }
}

impl AgentFailures {
    fn lock(&self) -> std::sync::MutexGuard<'_, AgentCounts> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How a request from `source` signed for `app_id` is handled at `now_secs`; an error if it
    /// is to be refused before its signature is checked.
    pub fn standing(&self, source: IpAddr, app_id: &str, now_secs: i64) -> Result<Standing, TooManyFailures> {
        let state = self.lock();
        let Some(over) = state.over(source, app_id, now_secs) else { return Ok(Standing::Clear) };
        match state.good.get(app_id) {
            Some(&(good, _)) if good == source => Ok(Standing::Tarpit),
            _ => Err(over),
        }
    }

    /// Counts one failed attempt from `source` for `app_id`.
    pub fn record_failure(&self, source: IpAddr, app_id: &str, now_secs: i64) {
        let (w, _) = window(now_secs);
        let key = source_key(source);
        let mut state = self.lock();
        state.pair.add((key, app_id.to_owned()), w);
        state.app_id.add(app_id.to_owned(), w);
        state.source.add(key, w);
    }

    /// This server's counts of the current window not shared yet, to share with the others.
    pub fn take_unshared(&self, now_secs: i64) -> Vec<SharedCount> {
        let (w, _) = window(now_secs);
        let mut state = self.lock();
        let mut out = Vec::new();
        state.pair.take_unshared(kind::PAIR, w, &mut out);
        state.app_id.take_unshared(kind::APP_ID, w, &mut out);
        state.source.take_unshared(kind::SOURCE, w, &mut out);
        out
    }

    /// Takes what the other servers counted in the current window (their sums).
    pub fn set_others(&self, now_secs: i64, shared: &[SharedCount]) {
        let (w, _) = window(now_secs);
        let mut state = self.lock();
        state.pair.set_others(kind::PAIR, w, shared);
        state.app_id.set_others(kind::APP_ID, w, shared);
        state.source.set_others(kind::SOURCE, w, shared);
    }

    /// Notes that a request from `source` proved the right to `app_id`.
    pub fn record_success(&self, source: IpAddr, app_id: &str, now_secs: i64) {
        let mut state = self.lock();
        if let Some(entry) = state.good.get_mut(app_id) {
            *entry = (source, now_secs);
            return;
        }
        if state.good.len() >= MAX_GOOD_SOURCES {
            state.good.retain(|_, (_, at)| now_secs - *at < GOOD_SOURCE_IDLE_SECS);
            if state.good.len() >= MAX_GOOD_SOURCES {
                return;
            }
        }
        state.good.insert(app_id.to_owned(), (source, now_secs));
    }
}

impl AgentCounts {
    /// The first count of a request that is over its limit, narrowest first.
    fn over(&self, source: IpAddr, app_id: &str, now_secs: i64) -> Option<TooManyFailures> {
        let (w, retry_in) = window(now_secs);
        let key = source_key(source);
        let too_many = |scope, count| TooManyFailures { what: "failed attempts", scope, count, retry_in };
        if let Some(count) = self.pair.over(&(key, app_id.to_owned()), w) {
            return Some(too_many(Scope::SourceAppId(key, app_id.to_owned()), count));
        }
        if let Some(count) = self.app_id.over(&app_id.to_owned(), w) {
            return Some(too_many(Scope::AppId(app_id.to_owned()), count));
        }
        self.source.over(&key, w).map(|count| too_many(Scope::Source(key), count))
    }
}

/// Counts of wrong admin tokens, per source and in all.
pub struct TokenFailures {
    state: Mutex<(Counts<IpAddr>, Counts<()>)>,
}

impl Default for TokenFailures {
    fn default() -> Self {
        TokenFailures {
            state: Mutex::new((
                Counts::new(MAX_FAILURES_PER_MINUTE),
                Counts::new(MAX_WRONG_ADMIN_TOKENS_PER_MINUTE),
            )),
        }
    }
}

impl TokenFailures {
    fn lock(&self) -> std::sync::MutexGuard<'_, (Counts<IpAddr>, Counts<()>)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This server's counts of the current window not shared yet, to share with the others.
    pub fn take_unshared(&self, now_secs: i64) -> Vec<SharedCount> {
        let (w, _) = window(now_secs);
        let mut state = self.lock();
        let mut out = Vec::new();
        state.0.take_unshared(kind::TOKEN_SOURCE, w, &mut out);
        state.1.take_unshared(kind::TOKEN_EVERYONE, w, &mut out);
        out
    }

    /// Takes what the other servers counted in the current window (their sums).
    pub fn set_others(&self, now_secs: i64, shared: &[SharedCount]) {
        let (w, _) = window(now_secs);
        let mut state = self.lock();
        state.0.set_others(kind::TOKEN_SOURCE, w, shared);
        state.1.set_others(kind::TOKEN_EVERYONE, w, shared);
    }

    /// Counts one wrong token from `source` (if known) and says whether it went over a limit:
    /// then it is answered 429, after [`TARPIT`].
    pub fn record(&self, source: Option<IpAddr>, now_secs: i64) -> Result<(), TooManyFailures> {
        let (w, retry_in) = window(now_secs);
        let mut state = self.lock();
        let (per_source, everyone) = &mut *state;
        let too_many = |scope, count| TooManyFailures { what: "wrong admin tokens", scope, count, retry_in };
        let key = source.map(source_key);
        let source_over = key.and_then(|key| per_source.over(&key, w));
        let everyone_over = everyone.over(&(), w);
        if let Some(key) = key {
            per_source.add(key, w);
        }
        everyone.add((), w);
        match (key, source_over, everyone_over) {
            (Some(key), Some(count), _) => Err(too_many(Scope::Source(key), count)),
            (_, _, Some(count)) => Err(too_many(Scope::Everyone, count)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "h1";

    fn ip(last: u8) -> IpAddr {
        [127, 0, 0, last].into()
    }

    fn fail(failures: &AgentFailures, source: IpAddr, app_id: &str, times: u32, now: i64) {
        for _ in 0..times {
            failures.record_failure(source, app_id, now);
        }
    }

    #[test]
    fn one_source_failing_for_one_app_id_is_refused_for_it_until_the_window_ends() {
        let failures = AgentFailures::default();
        fail(&failures, ip(2), HOST, MAX_FAILURES_PER_APP_ID_SOURCE - 1, 600);
        assert_eq!(failures.standing(ip(2), HOST, 600), Ok(Standing::Clear));
        fail(&failures, ip(2), HOST, 1, 600);
        let refused = failures.standing(ip(2), HOST, 630).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "too many failed attempts for app id \"h1\" from 127.0.0.2 (10 this minute); retry in 30 s"
        );
        assert_eq!(failures.standing(ip(2), "h2", 630), Ok(Standing::Clear), "another app id");
        assert_eq!(failures.standing(ip(3), HOST, 630), Ok(Standing::Clear), "another source");
        assert_eq!(failures.standing(ip(2), HOST, 660), Ok(Standing::Clear), "a new window");
    }

    #[test]
    fn the_last_good_source_of_an_app_id_is_verified_over_every_limit() {
        let failures = AgentFailures::default();
        failures.record_success(ip(1), HOST, 600);
        for n in 0..MAX_FAILURES_PER_MINUTE {
            fail(&failures, ip(1), &format!("x{n}"), 1, 600);
        }
        fail(&failures, ip(1), HOST, MAX_FAILURES_PER_APP_ID_SOURCE, 600);
        fail(&failures, ip(3), HOST, MAX_FAILURES_PER_APP_ID - MAX_FAILURES_PER_APP_ID_SOURCE, 600);
        assert_eq!(failures.standing(ip(1), HOST, 600), Ok(Standing::Tarpit));
        assert!(failures.standing(ip(1), "h2", 600).is_err(), "h2 never proved itself from there");
        let refused = failures.standing(ip(2), HOST, 600).unwrap_err();
        assert_eq!(refused.scope, Scope::AppId(HOST.into()), "{refused}");
        failures.record_success(ip(2), HOST, 601);
        assert!(failures.standing(ip(1), HOST, 601).is_err(), "the good source moved");
    }

    #[test]
    fn many_sources_failing_for_one_app_id_are_refused_together() {
        let failures = AgentFailures::default();
        for last in 2..(2 + MAX_FAILURES_PER_APP_ID as u8) {
            fail(&failures, ip(last), HOST, 1, 600);
        }
        let refused = failures.standing(ip(200), HOST, 600).unwrap_err();
        assert_eq!(refused.scope, Scope::AppId(HOST.into()));
        assert_eq!(failures.standing(ip(200), "h2", 600), Ok(Standing::Clear));
    }

    #[test]
    fn an_ipv6_host_is_counted_by_its_64_prefix_and_a_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(source_key("::ffff:10.0.0.1".parse().unwrap()), IpAddr::from([10, 0, 0, 1]));
    }

    #[test]
    fn what_other_servers_counted_adds_to_this_ones_count_in_the_same_minute() {
        let (here, there) = (AgentFailures::default(), AgentFailures::default());
        let half = MAX_FAILURES_PER_APP_ID_SOURCE / 2;
        fail(&here, ip(2), HOST, half, 600);
        fail(&there, ip(2), HOST, MAX_FAILURES_PER_APP_ID_SOURCE - half, 601);
        assert_eq!(here.standing(ip(2), HOST, 601), Ok(Standing::Clear), "each below the limit");
        let shared = there.take_unshared(601);
        assert!(there.take_unshared(601).is_empty(), "shared once");
        here.set_others(602, &shared);
        let refused = here.standing(ip(2), HOST, 602).unwrap_err();
        assert_eq!(refused.scope, Scope::SourceAppId(ip(2), HOST.into()), "{refused}");
        assert_eq!(refused.count, MAX_FAILURES_PER_APP_ID_SOURCE);
        assert_eq!(here.standing(ip(2), HOST, 660), Ok(Standing::Clear), "the next minute");

        let tokens = (TokenFailures::default(), TokenFailures::default());
        for _ in 0..MAX_FAILURES_PER_MINUTE - 1 {
            let _ = tokens.1.record(Some(ip(7)), 600);
        }
        tokens.0.set_others(600, &tokens.1.take_unshared(600));
        let refused = tokens.0.record(Some(ip(7)), 600).and_then(|()| tokens.0.record(Some(ip(7)), 600));
        assert_eq!(refused.unwrap_err().scope, Scope::Source(ip(7)));
    }

    #[test]
    fn shared_keys_read_back_as_written() {
        let v6: IpAddr = "2001:db8::".parse().unwrap();
        for source in [ip(1), v6] {
            assert_eq!(IpAddr::from_bytes(&source.to_bytes()), Some(source));
            let pair = (source, "web-1".to_owned());
            assert_eq!(<(IpAddr, String)>::from_bytes(&pair.to_bytes()), Some(pair));
        }
        assert_eq!(<()>::from_bytes(&().to_bytes()), Some(()));
        assert_eq!(IpAddr::from_bytes(b"short"), None);
    }

    #[test]
    fn counts_stay_bounded() {
        let mut counts = Counts::new(1);
        for n in 0..MAX_COUNTED_KEYS + 10 {
            counts.add(n, 1);
        }
        assert_eq!(counts.counts.len(), MAX_COUNTED_KEYS);
        counts.add(usize::MAX, 2);
        assert_eq!(counts.counts.len(), 1, "a new window drops the old keys");
    }

    #[test]
    fn wrong_admin_tokens_over_a_limit_are_reported_per_source_then_for_everyone() {
        let tokens = TokenFailures::default();
        for _ in 0..MAX_FAILURES_PER_MINUTE {
            assert!(tokens.record(Some(ip(1)), 600).is_ok());
        }
        let refused = tokens.record(Some(ip(1)), 610).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "too many wrong admin tokens from 127.0.0.1 (30 this minute); retry in 50 s"
        );
        for n in 0..MAX_WRONG_ADMIN_TOKENS_PER_MINUTE {
            let _ = tokens.record(Some(IpAddr::from((n + 1000).to_be_bytes())), 610);
        }
        let refused = tokens.record(Some(ip(9)), 610).unwrap_err();
        assert_eq!(refused.scope, Scope::Everyone);
        assert!(tokens.record(Some(ip(9)), 660).is_ok(), "a new window");
    }
}
