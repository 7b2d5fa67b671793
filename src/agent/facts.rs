//! What the agent tells the server about its host: host name, OS name and version
//! (/etc/os-release), kernel release and architecture (uname), non-loopback IP addresses, and
//! boot time (/proc/stat), each cut to the server's limits. [`FactsWatch`] remembers what was
//! sent last, so the heartbeat sends facts again only when they changed.

use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::protocol::facts::{HostFacts, MAX_FACT_IPS, MAX_FACT_LEN};

/// How often the heartbeat looks whether the facts changed.
pub const FACTS_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Where the OS name and version are read, in order.
const OS_RELEASE_FILES: [&str; 2] = ["/etc/os-release", "/usr/lib/os-release"];
/// Largest os-release or /proc/stat file read (both are a few KiB).
const MAX_FILE: u64 = 1024 * 1024;

/// Collects the host's facts now; what cannot be read is left out.
pub fn collect() -> HostFacts {
    let (os_name, os_version) = os_release().unwrap_or_default();
    let (kernel, arch) = uname();
    HostFacts {
        hostname: super::state::hostname().ok().map(fit),
        os_name: os_name.map(fit),
        os_version: os_version.map(fit),
        kernel: kernel.map(fit),
        arch: arch.map(fit),
        ips: ip_addresses(),
        boot_time: boot_time(),
    }
}

/// Cuts `text` to what the server accepts: no control characters, at most [`MAX_FACT_LEN`] bytes.
fn fit(text: String) -> String {
    let mut out = String::new();
    for c in text.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_FACT_LEN {
            break;
        }
        out.push(c);
    }
    out
}

fn read_small(path: &str) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path).ok()?.take(MAX_FILE).read_to_string(&mut text).ok()?;
    Some(text)
}

/// `NAME` and `VERSION_ID` of the first os-release file found.
fn os_release() -> Option<(Option<String>, Option<String>)> {
    OS_RELEASE_FILES.iter().find_map(|path| read_small(path)).map(|text| parse_os_release(&text))
}

/// `NAME` and `VERSION_ID` of an os-release text (values may be quoted).
pub fn parse_os_release(text: &str) -> (Option<String>, Option<String>) {
    let value = |key: &str| {
        text.lines().find_map(|line| {
            let raw = line.trim().strip_prefix(key)?.strip_prefix('=')?;
            let unquoted = raw.trim_matches(|c| c == '"' || c == '\'');
            (!unquoted.is_empty()).then(|| unquoted.replace("\\\"", "\""))
        })
    };
    (value("NAME"), value("VERSION_ID"))
}

/// Kernel release and machine (`uname -r`, `uname -m`).
fn uname() -> (Option<String>, Option<String>) {
    // SAFETY: utsname is plain C data for which all-zero bytes are a valid value.
    let mut name: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer is to a live, writable utsname.
    if unsafe { libc::uname(&mut name) } != 0 {
        return (None, None);
    }
    let text = |field: &[libc::c_char]| {
        let bytes: Vec<u8> = field.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        (!text.is_empty()).then_some(text)
    };
    (text(&name.release), text(&name.machine))
}

/// Non-loopback addresses of the host's interfaces, v4 and v6, sorted, without repeats, at most
/// [`MAX_FACT_IPS`].
fn ip_addresses() -> Vec<String> {
    let Ok(interfaces) = if_addrs::get_if_addrs() else { return Vec::new() };
    let mut ips: Vec<std::net::IpAddr> =
        interfaces.iter().filter(|i| !i.is_loopback()).map(if_addrs::Interface::ip).collect();
    ips.sort_unstable();
    ips.dedup();
    ips.into_iter().take(MAX_FACT_IPS).map(|ip| ip.to_string()).collect()
}

/// Unix seconds of the boot, from `btime` in /proc/stat.
fn boot_time() -> Option<i64> {
    parse_btime(&read_small("/proc/stat")?)
}

/// The `btime` line of a /proc/stat text.
pub fn parse_btime(text: &str) -> Option<i64> {
    text.lines().find_map(|line| line.strip_prefix("btime ")?.trim().parse().ok()).filter(|t| *t > 0)
}

/// The facts sent last, to send them again only when they change.
#[derive(Default)]
pub struct FactsWatch {
    sent: Mutex<Option<HostFacts>>,
}

impl FactsWatch {
    fn lock(&self) -> MutexGuard<'_, Option<HostFacts>> {
        // Nothing panics while holding the lock, and the value stays meaningful anyway.
        self.sent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Facts to send with `register`, remembered as sent.
    pub fn for_register(&self) -> HostFacts {
        let facts = collect();
        *self.lock() = Some(facts.clone());
        facts
    }

    /// `now` if it differs from what was sent last.
    pub fn changed(&self, now: HostFacts) -> Option<HostFacts> {
        (self.lock().as_ref() != Some(&now)).then_some(now)
    }

    /// Remembers `facts` as sent.
    pub fn sent(&self, facts: HostFacts) {
        *self.lock() = Some(facts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_names_and_versions_are_read_quoted_or_not() {
        let debian = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n";
        assert_eq!(parse_os_release(debian), (Some("Debian GNU/Linux".into()), Some("12".into())));
        let arch = "NAME=Arch Linux\nID=arch\n";
        assert_eq!(parse_os_release(arch), (Some("Arch Linux".into()), None));
        assert_eq!(parse_os_release(""), (None, None));
    }

    #[test]
    fn btime_is_read_from_proc_stat() {
        assert_eq!(parse_btime("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n"), Some(1_700_000_000));
        assert_eq!(parse_btime("cpu 1\n"), None);
        assert_eq!(parse_btime("btime x\n"), None);
    }

    #[test]
    fn long_or_odd_text_is_cut_to_what_the_server_accepts() {
        assert_eq!(fit("a\tb\nc".into()), "abc");
        assert_eq!(fit("é".repeat(200)).len(), 256);
    }

    #[test]
    fn this_hosts_facts_pass_the_servers_checks() {
        let facts = collect();
        let now = chrono::Utc::now().timestamp();
        assert_eq!(crate::protocol::facts::check_facts(&facts, now), Ok(()));
        assert!(facts.kernel.is_some() && facts.arch.is_some(), "{facts:?}");
        assert!(facts.boot_time.is_some_and(|t| t <= now), "{facts:?}");
        assert!(facts.ips.iter().all(|ip| ip != "127.0.0.1" && ip != "::1"), "{facts:?}");
    }

    #[test]
    fn the_watch_says_when_facts_changed() {
        let watch = FactsWatch::default();
        let first = watch.for_register();
        assert_eq!(watch.changed(first.clone()), None);
        let moved = HostFacts { ips: vec!["192.0.2.7".into()], ..first };
        assert_eq!(watch.changed(moved.clone()), Some(moved.clone()));
        watch.sent(moved.clone());
        assert_eq!(watch.changed(moved), None);
    }
}
