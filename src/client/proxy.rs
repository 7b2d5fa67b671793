//! Which HTTP proxy, if any, reaches a server URL: an explicit one (the agent's `--proxy`, else
//! `ORANGE_PROXY`; `none` for no proxy at all), else the variables curl reads
//! (`https_proxy`/`HTTPS_PROXY` for https URLs, `http_proxy`/`HTTP_PROXY` for http ones,
//! `all_proxy`/`ALL_PROXY` for both; the lowercase form first), except for the hosts `NO_PROXY`
//! (`no_proxy`) lists. A proxy URL's password never reaches `Debug`, `Display` or a message.
//!
//! ureq reads these variables itself, but takes `HTTPS_PROXY` for plain-http URLs too and
//! matches `NO_PROXY` without ports or IP ranges; the client therefore gives ureq the proxy
//! chosen here, or none.

use std::fmt;
use std::net::IpAddr;

use ureq::http::Uri;

/// Environment variable naming the proxy orange uses for every server URL (`none`: no proxy).
pub const ENV_PROXY: &str = "ORANGE_PROXY";
/// The explicit value that turns every proxy off, whatever the environment says.
pub const NO_PROXY_VALUE: &str = "none";
/// The agent's flag naming its proxy, which wins over the environment.
const FLAG: &str = "--proxy";
/// Longest proxy URL accepted.
const MAX_PROXY_URL: usize = 2048;
/// Longest `NO_PROXY` value accepted.
const MAX_NO_PROXY: usize = 64 * 1024;

/// A proxy URL (`http://` or `https://`, with optional `user:password@`), checked once.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    proxy: ureq::Proxy,
    shown: String,
}

impl ProxyUrl {
    /// Parses `text`; a URL without a scheme is `http://`, as curl takes it. `origin` names where
    /// it came from in the error (`--proxy`, `HTTPS_PROXY`, ...).
    pub fn parse(text: &str, origin: &str) -> Result<ProxyUrl, String> {
        let text = text.trim();
        if text.len() > MAX_PROXY_URL {
            return Err(format!("{origin}: a proxy URL has at most {MAX_PROXY_URL} characters"));
        }
        let url = if text.contains("://") { text.to_owned() } else { format!("http://{text}") };
        let shown = mask_password(&url);
        let bad = |why: &str| format!("{origin}={shown:?} is not a proxy URL: {why}");
        let uri: Uri = url.parse().map_err(|_| bad("expected http://[user:password@]host[:port]"))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            Some(other) => {
                return Err(bad(&format!(
                    "{other} proxies are not supported; give an http:// or https:// proxy"
                )));
            }
            None => return Err(bad("no scheme")),
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(bad("no host"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad("a proxy URL has no path"));
        }
        let proxy = ureq::Proxy::new(&url).map_err(|e| bad(&e.to_string()))?;
        Ok(ProxyUrl { proxy, shown })
    }

    /// The proxy for the HTTP client, credentials included.
    pub fn to_ureq(&self) -> ureq::Proxy {
        self.proxy.clone()
    }
}

impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyUrl({})", self.shown)
    }
}

/// `url` with the password of its `user:password@` replaced by `***`.
fn mask_password(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    let user = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => userinfo.to_owned(),
    };
    format!("{scheme}://{user}@{host}{path}")
}

/// What the environment and the flags say about proxies, before a server URL is known.
#[derive(Debug, Clone, Default)]
pub struct ProxySettings {
    /// `--proxy` or `ORANGE_PROXY`, and which of the two: used for every URL.
    explicit: Option<(String, &'static str)>,
    /// The first set of `https_proxy`, `HTTPS_PROXY`, with its name.
    https: Option<(String, &'static str)>,
    /// The first set of `http_proxy`, `HTTP_PROXY`, with its name.
    http: Option<(String, &'static str)>,
    /// The first set of `all_proxy`, `ALL_PROXY`, with its name.
    all: Option<(String, &'static str)>,
    /// `no_proxy` or `NO_PROXY`, with its name: the hosts reached directly, parsed only when
    /// a proxy is in use (so that a list orange cannot read harms nobody who uses none).
    no_proxy: Option<(String, &'static str)>,
}

impl ProxySettings {
    /// The settings from `flag` (the agent's `--proxy`, even empty) and the variables `lookup`
    /// finds (empty ones count as unset).
    pub fn from_lookup(flag: Option<&str>, lookup: &dyn Fn(&str) -> Option<String>) -> ProxySettings {
        let first = |names: &[&'static str]| {
            names.iter().copied().find_map(|name| {
                lookup(name)
                    .map(|value| value.trim().to_owned())
                    .filter(|value| !value.is_empty())
                    .map(|v| (v, name))
            })
        };
        let explicit = match flag {
            Some(value) => Some((value.trim().to_owned(), FLAG)),
            None => first(&[ENV_PROXY]),
        };
        ProxySettings {
            explicit,
            https: first(&["https_proxy", "HTTPS_PROXY"]),
            http: first(&["http_proxy", "HTTP_PROXY"]),
            all: first(&["all_proxy", "ALL_PROXY"]),
            no_proxy: first(&["no_proxy", "NO_PROXY"]),
        }
    }

    /// The proxy to reach `server` (an `http://` or `https://` URL) through, or `None` to
    /// connect directly; an error names a proxy setting that is not a usable URL, or `--proxy`
    /// with a password, which `ps` would show every user.
    pub fn for_server(&self, server: &str) -> Result<Option<ProxyUrl>, String> {
        let uri: Uri = server.parse().map_err(|_| format!("{server:?} is not a URL"))?;
        let https = uri.scheme_str() == Some("https");
        let chosen = match &self.explicit {
            Some((value, _)) if value.eq_ignore_ascii_case(NO_PROXY_VALUE) => return Ok(None),
            Some(explicit) => Some(explicit),
            None if https => self.https.as_ref().or(self.all.as_ref()),
            None => self.http.as_ref().or(self.all.as_ref()),
        };
        let Some((value, origin)) = chosen else { return Ok(None) };
        let proxy = ProxyUrl::parse(value, origin)?;
        if *origin == FLAG && proxy.proxy.password().is_some() {
            return Err(format!(
                "{FLAG} {proxy}: a password on the command line is visible to every user (ps); \
                 give the URL with its credentials in {ENV_PROXY} or HTTPS_PROXY instead"
            ));
        }
        let host = uri.host().unwrap_or_default();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let no_proxy = match &self.no_proxy {
            Some((list, name)) => NoProxy::parse(list).map_err(|e| format!("{name}: {e}"))?,
            None => NoProxy::default(),
        };
        Ok(if no_proxy.matches(host, port) { None } else { Some(proxy) })
    }
}

/// The `NO_PROXY` list: hosts, domains, IP addresses or ranges reached without a proxy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NoProxy {
    everything: bool,
    entries: Vec<NoProxyEntry>,
}

/// One `NO_PROXY` entry.
#[derive(Debug, Clone, PartialEq)]
enum NoProxyEntry {
    /// A host name and its subdomains (`example.com`, `.example.com`, `*.example.com`), on any
    /// port or on the one given.
    Domain { name: String, port: Option<u16> },
    /// One IP address, on any port or on the one given.
    Address { ip: IpAddr, port: Option<u16> },
    /// An IP range in CIDR form (`10.0.0.0/8`).
    Range { network: IpAddr, prefix: u8 },
}

impl NoProxy {
    /// Parses a list separated by commas or white space. `*` alone means every host; an entry
    /// is a host (`example.com`, matching its subdomains too, as curl does; a leading `.` or
    /// `*.` changes nothing), an IP address (`[::1]` or `::1`), either with `:PORT`, or a CIDR
    /// range.
    pub fn parse(text: &str) -> Result<NoProxy, String> {
        if text.len() > MAX_NO_PROXY {
            return Err(format!("at most {MAX_NO_PROXY} characters"));
        }
        let mut list = NoProxy::default();
        for word in text.split(|c: char| c == ',' || c.is_whitespace()).filter(|w| !w.is_empty()) {
            if word == "*" {
                list.everything = true;
                continue;
            }
            list.entries.push(NoProxyEntry::parse(word)?);
        }
        Ok(list)
    }

    /// Whether `host` (as a URL spells it: a name, an IPv4 address or a bracketed IPv6 one) on
    /// `port` is reached directly.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        let host =
            host.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.').to_ascii_lowercase();
        let ip = host.parse::<IpAddr>().ok();
        self.everything || self.entries.iter().any(|entry| entry.matches(&host, ip, port))
    }
}

impl NoProxyEntry {
    fn parse(word: &str) -> Result<NoProxyEntry, String> {
        let bad = |why: &str| format!("{word:?} is not a host, host:port, IP address or CIDR range: {why}");
        if let Some((network, prefix)) = word.split_once('/') {
            let network: IpAddr = network.parse().map_err(|_| bad("bad address before /"))?;
            let most = if network.is_ipv4() { 32 } else { 128 };
            let prefix: u8 =
                prefix.parse().ok().filter(|p| *p <= most).ok_or_else(|| bad("bad prefix length"))?;
            return Ok(NoProxyEntry::Range { network, prefix });
        }
        let (host, port) = split_port(word).map_err(&bad)?;
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(NoProxyEntry::Address { ip, port });
        }
        let name =
            host.trim_start_matches("*.").trim_start_matches('.').trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) {
            return Err(bad("not a host name"));
        }
        Ok(NoProxyEntry::Domain { name, port })
    }

    fn matches(&self, host: &str, ip: Option<IpAddr>, port: u16) -> bool {
        let port_fits = |wanted: &Option<u16>| wanted.is_none_or(|wanted| wanted == port);
        match self {
            NoProxyEntry::Domain { name, port: wanted } => {
                port_fits(wanted)
                    && (host == name
                        || host.strip_suffix(name.as_str()).is_some_and(|rest| rest.ends_with('.')))
            }
            NoProxyEntry::Address { ip: wanted_ip, port: wanted } => {
                port_fits(wanted) && ip == Some(*wanted_ip)
            }
            NoProxyEntry::Range { network, prefix } => ip.is_some_and(|ip| in_range(ip, *network, *prefix)),
        }
    }
}

/// `host:port`, `[v6]:port`, `[v6]`, a bare IPv6 address or a bare host, split.
fn split_port(word: &str) -> Result<(&str, Option<u16>), &'static str> {
    if let Some(rest) = word.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("no ] after [")?;
        return match after.strip_prefix(':') {
            Some(port) => Ok((host, Some(port.parse().map_err(|_| "bad port")?))),
            None if after.is_empty() => Ok((host, None)),
            None => Err("text after ]"),
        };
    }
    match word.split_once(':') {
        Some((host, port)) if !port.contains(':') => Ok((host, Some(port.parse().map_err(|_| "bad port")?))),
        _ => Ok((word, None)),
    }
}

/// Whether `ip` lies in `network/prefix` (an IPv4 address never lies in an IPv6 range).
fn in_range(ip: IpAddr, network: IpAddr, prefix: u8) -> bool {
    let (ip, network, width) = match (ip, network) {
        (IpAddr::V4(ip), IpAddr::V4(network)) => {
            (u128::from(ip.to_bits()), u128::from(network.to_bits()), 32)
        }
        (IpAddr::V6(ip), IpAddr::V6(network)) => (ip.to_bits(), network.to_bits(), 128),
        _ => return false,
    };
    let ignored = width - u32::from(prefix);
    ignored >= width || (ip >> ignored) == (network >> ignored)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(flag: Option<&str>, vars: &[(&str, &str)]) -> ProxySettings {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ProxySettings::from_lookup(flag, &|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    fn chosen(settings: &ProxySettings, server: &str) -> Option<String> {
        settings.for_server(server).expect("proxy").map(|proxy| proxy.to_string())
    }

    #[test]
    fn each_scheme_takes_its_own_variable_lowercase_first_then_all_proxy() {
        let env = settings(
            None,
            &[
                ("HTTPS_PROXY", "http://upper:1"),
                ("https_proxy", "lower:2"),
                ("HTTP_PROXY", "http://plain:3"),
            ],
        );
        assert_eq!(chosen(&env, "https://orange.example"), Some("http://lower:2".into()));
        assert_eq!(chosen(&env, "http://orange.example:8890"), Some("http://plain:3".into()));
        let all = settings(None, &[("ALL_PROXY", "http://all:4"), ("HTTP_PROXY", "")]);
        assert_eq!(chosen(&all, "http://orange.example"), Some("http://all:4".into()));
        assert_eq!(chosen(&settings(None, &[]), "http://orange.example"), None);
    }

    #[test]
    fn the_flag_beats_orange_proxy_which_beats_the_curl_variables_and_none_turns_all_off() {
        let env = [("HTTPS_PROXY", "http://env:1"), ("ORANGE_PROXY", "http://orange:2")];
        assert_eq!(chosen(&settings(Some("http://flag:3"), &env), "https://s"), Some("http://flag:3".into()));
        assert_eq!(chosen(&settings(None, &env), "https://s"), Some("http://orange:2".into()));
        assert_eq!(chosen(&settings(Some("none"), &env), "https://s"), None);
    }

    #[test]
    fn a_bad_no_proxy_list_matters_only_when_a_proxy_is_in_use() {
        let unused = settings(None, &[("NO_PROXY", "<local>")]);
        assert_eq!(chosen(&unused, "http://s"), None);
        let used = settings(None, &[("NO_PROXY", "<local>"), ("HTTP_PROXY", "http://p:1")]);
        assert!(used.for_server("http://s").unwrap_err().contains("NO_PROXY"));
    }

    #[test]
    fn no_proxy_applies_to_explicit_proxies_too() {
        let env = settings(Some("http://flag:3"), &[("NO_PROXY", "orange.example")]);
        assert_eq!(chosen(&env, "https://orange.example"), None);
        assert_eq!(chosen(&env, "https://other.example"), Some("http://flag:3".into()));
    }

    #[test]
    fn a_password_in_the_flag_is_refused_even_for_a_host_no_proxy_lists() {
        let env = settings(Some("http://ops:hunter2@flag:3"), &[("NO_PROXY", "orange.example")]);
        for server in ["https://orange.example", "https://other.example"] {
            let refused = env.for_server(server).unwrap_err();
            assert!(refused.contains("ops:***@") && !refused.contains("hunter2"), "{refused}");
        }
        let from_env = settings(None, &[("ORANGE_PROXY", "http://ops:hunter2@env:3")]);
        assert!(from_env.for_server("https://orange.example").is_ok());
        assert!(settings(Some(" "), &[("HTTPS_PROXY", "http://env:1")]).for_server("https://s").is_err());
    }

    #[test]
    fn no_proxy_matches_hosts_domains_ports_addresses_and_ranges() {
        let list =
            NoProxy::parse("example.com, .corp.test *.dev.test,127.0.0.1:8890 [::1] 10.0.0.0/8 fd00::/8")
                .expect("list");
        let direct = [
            ("example.com", 443),
            ("www.EXAMPLE.com.", 80),
            ("corp.test", 80),
            ("a.b.corp.test", 80),
            ("x.dev.test", 1),
            ("127.0.0.1", 8890),
            ("[::1]", 9),
            ("10.20.30.40", 80),
            ("[fd12::1]", 80),
        ];
        for (host, port) in direct {
            assert!(list.matches(host, port), "{host}:{port} should be direct");
        }
        let proxied = [
            ("badexample.com", 443),
            ("example.com.evil", 80),
            ("127.0.0.1", 8891),
            ("11.0.0.1", 80),
            ("[fe80::1]", 80),
        ];
        for (host, port) in proxied {
            assert!(!list.matches(host, port), "{host}:{port} should go through the proxy");
        }
        assert!(NoProxy::parse("*").expect("star").matches("anything", 1));
        assert!(!NoProxy::default().matches("anything", 1));
    }

    #[test]
    fn bad_entries_and_proxy_urls_are_refused_by_name_and_never_show_a_password() {
        assert!(NoProxy::parse("host:port").unwrap_err().contains("host:port"));
        assert!(NoProxy::parse("10.0.0.0/33").unwrap_err().contains("prefix"));
        assert!(NoProxy::parse(&"a,".repeat(MAX_NO_PROXY)).is_err());
        let refused = ProxyUrl::parse("socks5://user:hunter2@proxy:1080", "HTTPS_PROXY").unwrap_err();
        assert!(refused.contains("socks5") && refused.contains("HTTPS_PROXY"), "{refused}");
        assert!(!refused.contains("hunter2"), "{refused}");
        let bad_path = ProxyUrl::parse("http://user:hunter2@proxy:3128/path", "--proxy").unwrap_err();
        assert!(bad_path.contains("no path") && !bad_path.contains("hunter2"), "{bad_path}");
        assert!(ProxyUrl::parse(&"x".repeat(MAX_PROXY_URL + 1), "--proxy").is_err());
    }

    #[test]
    fn a_proxy_password_is_masked_in_display_and_debug_but_kept_for_the_client() {
        let proxy = ProxyUrl::parse("http://ops:hunter2@proxy.example:3128", "--proxy").expect("proxy");
        assert_eq!(proxy.to_string(), "http://ops:***@proxy.example:3128");
        assert!(!format!("{proxy:?}").contains("hunter2"));
        assert_eq!(proxy.to_ureq().password(), Some("hunter2"));
        assert_eq!(ProxyUrl::parse("proxy:3128", "x").expect("bare").to_string(), "http://proxy:3128");
    }
}
