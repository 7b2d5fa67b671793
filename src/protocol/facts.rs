//! Host facts: what an orange agent tells the server about its machine (OS, kernel, architecture,
//! addresses, boot time), sent with `register` and on [`FACTS_PATH`] when they change, and their
//! size limits. Original clients send none; every field is optional.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Route on which an orange agent sends its facts again when they changed (orange addition;
/// signed with the agent's own secret; the body is a [`HostFacts`]).
pub const FACTS_PATH: &str = "/orange-forge/api/facts";

/// Most IP addresses one agent may report.
pub const MAX_FACT_IPS: usize = 64;
/// Longest host name, OS name, OS version, kernel or architecture.
pub const MAX_FACT_LEN: usize = 256;
/// Largest clock skew accepted on a boot time in the future, in seconds.
const BOOT_TIME_SKEW_SECS: i64 = 24 * 3600;

/// What an agent knows about its host. Field names are stable: `orange agents --json` shows them.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// Host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// OS name, `NAME` of /etc/os-release (e.g. `Debian GNU/Linux`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_name: Option<String>,
    /// OS version, `VERSION_ID` of /etc/os-release (e.g. `12`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    /// Kernel release (`uname -r`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// Machine architecture (`uname -m`, e.g. `x86_64`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// Non-loopback IP addresses, IPv4 and IPv6, as text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    /// Unix seconds of the host's boot (so uptime need not be sent again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_time: Option<i64>,
}

/// Checks facts against their limits at `now_secs` (Unix seconds); the error names the bad field.
pub fn check_facts(facts: &HostFacts, now_secs: i64) -> Result<(), String> {
    let texts = [
        ("hostname", &facts.hostname),
        ("os_name", &facts.os_name),
        ("os_version", &facts.os_version),
        ("kernel", &facts.kernel),
        ("arch", &facts.arch),
    ];
    for (name, value) in texts {
        if value.as_deref().is_some_and(|v| v.len() > MAX_FACT_LEN || v.chars().any(char::is_control)) {
            return Err(format!("facts: {name} must be at most {MAX_FACT_LEN} printable characters"));
        }
    }
    if facts.ips.len() > MAX_FACT_IPS {
        return Err(format!("facts: {} IP addresses; the limit is {MAX_FACT_IPS}", facts.ips.len()));
    }
    if let Some(bad) = facts.ips.iter().find(|ip| ip.parse::<IpAddr>().is_err()) {
        return Err(format!("facts: {:?} is not an IP address", super::limits::shown(bad)));
    }
    if facts.boot_time.is_some_and(|t| t <= 0 || t > now_secs.saturating_add(BOOT_TIME_SKEW_SECS)) {
        return Err("facts: boot_time must be Unix seconds in the past".into());
    }
    Ok(())
}

/// Facts as the operator API shows them: the host's facts plus its uptime.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
pub struct FactsView {
    /// The facts the agent sent last.
    #[serde(flatten)]
    pub facts: HostFacts,
    /// `boot_time` as an RFC 3339 time, the form every other time in the operator API takes
    /// (`boot_time` stays in Unix seconds, as agents send it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_time_at: Option<String>,
    /// Seconds since `boot_time`, as the server reckons it now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_secs: Option<u64>,
    /// RFC 3339 time the server received these facts.
    pub updated_at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> HostFacts {
        HostFacts {
            hostname: Some("web-1".into()),
            os_name: Some("Debian GNU/Linux".into()),
            os_version: Some("12".into()),
            kernel: Some("6.1.0-18-amd64".into()),
            arch: Some("x86_64".into()),
            ips: vec!["10.0.0.5".into(), "fe80::1".into()],
            boot_time: Some(1_700_000_000),
        }
    }

    #[test]
    fn good_facts_pass_and_round_trip() {
        assert_eq!(check_facts(&sample(), 1_800_000_000), Ok(()));
        let text = serde_json::to_string(&sample()).unwrap();
        assert_eq!(serde_json::from_str::<HostFacts>(&text).unwrap(), sample());
        assert_eq!(serde_json::from_str::<HostFacts>("{}").unwrap(), HostFacts::default());
    }

    #[test]
    fn each_limit_has_its_own_message() {
        let now = 1_800_000_000;
        let mut many = sample();
        many.ips = vec!["10.0.0.1".into(); MAX_FACT_IPS + 1];
        assert_eq!(check_facts(&many, now).unwrap_err(), "facts: 65 IP addresses; the limit is 64");
        let mut long = sample();
        long.kernel = Some("k".repeat(MAX_FACT_LEN + 1));
        assert_eq!(
            check_facts(&long, now).unwrap_err(),
            "facts: kernel must be at most 256 printable characters"
        );
        let mut control = sample();
        control.os_name = Some("a\nb".into());
        assert!(check_facts(&control, now).unwrap_err().starts_with("facts: os_name"));
        let mut bad_ip = sample();
        bad_ip.ips.push("not-an-ip".into());
        assert_eq!(check_facts(&bad_ip, now).unwrap_err(), "facts: \"not-an-ip\" is not an IP address");
        let mut future = sample();
        future.boot_time = Some(now + 2 * 24 * 3600);
        assert_eq!(
            check_facts(&future, now).unwrap_err(),
            "facts: boot_time must be Unix seconds in the past"
        );
    }

    #[test]
    fn the_view_flattens_the_facts() {
        let view = FactsView {
            facts: sample(),
            boot_time_at: Some("2023-11-14T22:13:20Z".into()),
            uptime_secs: Some(5),
            updated_at: "t".into(),
        };
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["kernel"], "6.1.0-18-amd64");
        assert_eq!(json["uptime_secs"], 5);
        assert_eq!(
            (&json["boot_time"], &json["boot_time_at"]),
            (&1_700_000_000.into(), &"2023-11-14T22:13:20Z".into())
        );
        assert_eq!(serde_json::from_value::<FactsView>(json).unwrap(), view);
    }
}
