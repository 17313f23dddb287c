//! The server's configuration: a serde [`Config`] read from TOML, then every key overridden by a
//! `CPNS_AUTH_<KEY>` environment variable, then by command-line flags (in `main.rs`).
//!
//! [`Config::default`] is the developer's configuration: loopback, any free port, short-lived
//! nothing. Durations are written the humantime way (`30s`, `1h`, `365days`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

/// The prefix of every environment variable that overrides a configuration key:
/// `CPNS_AUTH_` followed by the key in upper case (`CPNS_AUTH_ADMIN_PORT=7070`).
pub const ENV_PREFIX: &str = "CPNS_AUTH_";

/// Everything `cpns-auth serve` (and the offline admin CLI) can be told.
///
/// Every field has a default (see [`Config::default`]); a TOML file names only what it changes.
/// Unknown keys are an error, so that a typo never silently falls back to a default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The data directory: CA key (`ca.key`), the server's libp2p key (`server.key`), the sled
    /// database (`db/`) and, while the server runs, `admin.json`. Created with mode 0700.
    /// Default: `./cpns-auth-data`.
    pub data_dir: PathBuf,
    /// Where the libp2p node listens. Default: `/ip4/127.0.0.1/tcp/0` (loopback, any free port:
    /// right for tests; a household server uses e.g. `/ip4/0.0.0.0/tcp/4100` so that codes
    /// stay valid across restarts and devices on the LAN can reach it).
    pub listen: Vec<Multiaddr>,
    /// Addresses written into enrolment codes instead of the listen addresses, for a server
    /// behind NAT or a port forward. Default: none (use the addresses the node listens on).
    pub advertise: Vec<Multiaddr>,
    /// Port of the admin endpoint on 127.0.0.1 (0: any free port; the chosen one is written to
    /// `admin.json`). Default: 0.
    pub admin_port: u16,
    /// Default lifetime of an enrolment code (`enrol create --ttl` overrides it). Default: 1 h.
    #[serde(with = "duration_text")]
    pub code_ttl: Duration,
    /// Lifetime of an entity credential from its issue. Default: 365 days.
    #[serde(with = "duration_text")]
    pub credential_lifetime: Duration,
    /// How old an entity's current credential must be before the server renews it (nodes
    /// renew when a third of the lifetime is left); bounds how many serials one entity can
    /// collect. Default: 1 day.
    #[serde(with = "duration_text")]
    pub credential_renewal_min_age: Duration,
    /// How long a node has to answer an authentication challenge (B.1 step 9 to 10).
    /// Default: 30 s.
    #[serde(with = "duration_text")]
    pub challenge_ttl: Duration,
    /// How long a session lasts after authentication (B.1 step 11); the node authenticates
    /// again afterwards. Capped by the credential's expiry. Default: 1 h.
    #[serde(with = "duration_text")]
    pub session_ttl: Duration,
    /// How far a PNE's membership request time (B.1 step 18/19) may be from the server's clock.
    /// Default: 5 min.
    #[serde(with = "duration_text")]
    pub membership_clock_skew: Duration,
    /// Enrolment attempts allowed per enrolment code per minute, whichever peers make them
    /// (token bucket; a burst of this many, then one more every 60/N s). Default: 5.
    pub enrol_attempts_per_minute: u32,
    /// Enrolment attempts allowed per minute in total, for any code id. Default: 60.
    pub enrol_attempts_global_per_minute: u32,
    /// Most code ids the enrolment rate limiter remembers; the least recently seen is
    /// forgotten first. Default: 10,000.
    pub max_rate_limited_peers: usize,
    /// Most outstanding authentication challenges in total. Default: 65,536.
    pub max_challenges: usize,
    /// Most outstanding challenges per peer; a new one evicts the peer's oldest. Default: 4.
    pub max_challenges_per_peer: usize,
    /// Most live sessions. Default: 65,536.
    pub max_sessions: usize,
    /// Most requests handled at once; more are answered `Busy`. Default: 512.
    pub max_concurrent_requests: usize,
    /// Most Service Groups one entity may own. Default: 256.
    pub max_groups_per_entity: usize,
    /// Most members (and, separately, invitees) of one PN or Service Group. Default: 1,024.
    pub max_group_members: usize,
    /// Largest request or response frame, in bytes. Default: 1 MiB.
    pub max_frame: usize,
    /// Whether the server pushes new keys to members (and their gateways) after a rotation.
    /// Members can always pull. Default: true.
    pub push_keys: bool,
    /// Timeout of a request the server sends (B.1 steps 14 and 17, key pushes). Default: 10 s.
    #[serde(with = "duration_text")]
    pub request_timeout: Duration,
    /// Most usage records stored per entity per UTC day (a report counts at least one);
    /// past it reports are refused `RateLimited` and stay queued at the node. Default: 10,000.
    pub max_usage_records_per_day: u64,
    /// How long charging records are kept; older ones are deleted as new reports arrive.
    /// Default: 400 days (a year of billing and a month to export it).
    #[serde(with = "duration_text")]
    pub usage_retention: Duration,
    /// Serve as the community's circuit relay (v2): devices behind NAT hold a slot here and
    /// are reached through it until hole punching gives a direct path (or for good, behind a
    /// symmetric NAT). The relay hands out `advertise`, or else the listen addresses that are
    /// not loopback. Default: false.
    pub relay: bool,
    /// Most reservations the relay holds. Default: 128.
    pub relay_max_reservations: usize,
    /// Most reservations per device. Default: 2.
    pub relay_max_reservations_per_peer: usize,
    /// Most relayed connections at once. Default: 64.
    pub relay_max_circuits: usize,
    /// Most relayed connections per device. Default: 8.
    pub relay_max_circuits_per_peer: usize,
    /// Longest life of one relayed connection. Default: 30 min.
    #[serde(with = "duration_text")]
    pub relay_max_circuit_duration: Duration,
    /// Most bytes one relayed connection carries, both directions, in MiB. Default: 64.
    pub relay_max_circuit_mib: u64,
    /// Answer AutoNAT probes: dial back a device's address (from a new port) so that it
    /// learns whether it is reachable from outside. Default: true.
    pub autonat_server: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("cpns-auth-data"),
            listen: vec![cpns_overlay::loopback_any()],
            advertise: Vec::new(),
            admin_port: 0,
            code_ttl: Duration::from_secs(3600),
            credential_lifetime: Duration::from_secs(365 * 86_400),
            credential_renewal_min_age: Duration::from_secs(86_400),
            challenge_ttl: Duration::from_secs(30),
            session_ttl: Duration::from_secs(3600),
            membership_clock_skew: Duration::from_secs(300),
            enrol_attempts_per_minute: 5,
            enrol_attempts_global_per_minute: 60,
            max_rate_limited_peers: 10_000,
            max_challenges: 65_536,
            max_challenges_per_peer: 4,
            max_sessions: 65_536,
            max_concurrent_requests: 512,
            max_groups_per_entity: 256,
            max_group_members: 1024,
            max_frame: cpns_overlay::codec::DEFAULT_MAX_FRAME,
            push_keys: true,
            request_timeout: Duration::from_secs(10),
            max_usage_records_per_day: 10_000,
            usage_retention: Duration::from_secs(400 * 86_400),
            relay: false,
            relay_max_reservations: 128,
            relay_max_reservations_per_peer: 2,
            relay_max_circuits: 64,
            relay_max_circuits_per_peer: 8,
            relay_max_circuit_duration: Duration::from_secs(30 * 60),
            relay_max_circuit_mib: 64,
            autonat_server: true,
        }
    }
}

/// Why a configuration could not be loaded.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key or a value of the wrong type. The message
    /// quotes the offending line and key.
    #[error("config{}: {message}", path.as_ref().map(|p| format!(" file {}", p.display())).unwrap_or_default())]
    Parse {
        /// The file, if the text came from one.
        path: Option<PathBuf>,
        /// The parser's message.
        message: String,
    },
    /// An environment variable does not parse as its key's type.
    #[error("environment variable {var} (config key `{key}`): {reason}")]
    Env {
        /// The variable.
        var: String,
        /// The key it overrides.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A value parses but is out of range.
    #[error("config key `{key}`: {reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl Config {
    /// The developer defaults with another data directory: what tests and examples start.
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            ..Self::default()
        }
    }

    /// The overlay's NAT settings for the server: an AutoNAT server, and the relay role when
    /// `relay` is on (always: the server's host is the reachable one).
    pub fn nat(&self) -> cpns_overlay::NatConfig {
        cpns_overlay::NatConfig {
            autonat_server: self.autonat_server,
            relay_server: if self.relay {
                cpns_overlay::RelayServerMode::Always
            } else {
                cpns_overlay::RelayServerMode::Off
            },
            relay_limits: cpns_overlay::RelayLimits {
                max_reservations: self.relay_max_reservations,
                max_reservations_per_peer: self.relay_max_reservations_per_peer,
                max_circuits: self.relay_max_circuits,
                max_circuits_per_peer: self.relay_max_circuits_per_peer,
                max_circuit_duration: self.relay_max_circuit_duration,
                max_circuit_bytes: self.relay_max_circuit_mib << 20,
                ..cpns_overlay::RelayLimits::default()
            },
            hole_punching: false,
            ..cpns_overlay::NatConfig::default()
        }
    }

    /// Parses TOML text (no environment), then [`validate`](Self::validate)s it.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: None,
            message: e.to_string(),
        })?;
        Self::from_table(table, None)
    }

    /// Loads the configuration the binary uses: defaults, then the TOML file (if any), then
    /// `CPNS_AUTH_<KEY>` variables from `vars` (pass `std::env::vars()`), then validation.
    pub fn load(
        file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                toml::from_str::<toml::Table>(&text).map_err(|e| ConfigError::Parse {
                    path: Some(path.to_path_buf()),
                    message: e.to_string(),
                })?
            }
            None => toml::Table::new(),
        };
        merge_env(&mut table, vars)?;
        Self::from_table(table, file)
    }

    fn from_table(table: toml::Table, path: Option<&Path>) -> Result<Self, ConfigError> {
        // Re-parse from text so that type errors quote the line with the key.
        let text = toml::to_string(&table).map_err(|e| ConfigError::Parse {
            path: path.map(Path::to_path_buf),
            message: e.to_string(),
        })?;
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.map(Path::to_path_buf),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges that the types alone do not; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn bad(key: &'static str, reason: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid {
                key,
                reason: reason.into(),
            })
        }
        fn within(
            key: &'static str,
            value: Duration,
            min: Duration,
            max: Duration,
        ) -> Result<(), ConfigError> {
            if value < min || value > max {
                return bad(
                    key,
                    format!(
                        "{} is out of range ({} to {})",
                        humantime::format_duration(value),
                        humantime::format_duration(min),
                        humantime::format_duration(max)
                    ),
                );
            }
            Ok(())
        }
        if self.listen.is_empty() {
            return bad("listen", "at least one listen address is needed");
        }
        if self.data_dir.as_os_str().is_empty() {
            return bad("data_dir", "must not be empty");
        }
        let s = Duration::from_secs;
        within(
            "challenge_ttl",
            self.challenge_ttl,
            Duration::from_millis(1),
            s(600),
        )?;
        within("session_ttl", self.session_ttl, s(1), s(30 * 86_400))?;
        within(
            "credential_lifetime",
            self.credential_lifetime,
            s(60),
            s(10 * 366 * 86_400),
        )?;
        within(
            "credential_renewal_min_age",
            self.credential_renewal_min_age,
            s(1),
            self.credential_lifetime,
        )?;
        within("code_ttl", self.code_ttl, s(1), s(30 * 86_400))?;
        within(
            "membership_clock_skew",
            self.membership_clock_skew,
            s(1),
            s(3600),
        )?;
        within("request_timeout", self.request_timeout, s(1), s(300))?;
        within(
            "usage_retention",
            self.usage_retention,
            s(86_400),
            s(10 * 366 * 86_400),
        )?;
        if self.max_usage_records_per_day == 0 {
            return bad("max_usage_records_per_day", "must be at least 1");
        }
        for (key, value) in [
            (
                "enrol_attempts_per_minute",
                self.enrol_attempts_per_minute as usize,
            ),
            (
                "enrol_attempts_global_per_minute",
                self.enrol_attempts_global_per_minute as usize,
            ),
            ("max_rate_limited_peers", self.max_rate_limited_peers),
            ("max_challenges", self.max_challenges),
            ("max_challenges_per_peer", self.max_challenges_per_peer),
            ("max_sessions", self.max_sessions),
            ("max_concurrent_requests", self.max_concurrent_requests),
            ("max_groups_per_entity", self.max_groups_per_entity),
            ("max_group_members", self.max_group_members),
            ("relay_max_reservations", self.relay_max_reservations),
            (
                "relay_max_reservations_per_peer",
                self.relay_max_reservations_per_peer,
            ),
            ("relay_max_circuits", self.relay_max_circuits),
            (
                "relay_max_circuits_per_peer",
                self.relay_max_circuits_per_peer,
            ),
        ] {
            if value == 0 {
                return bad(key, "must be at least 1");
            }
        }
        within(
            "relay_max_circuit_duration",
            self.relay_max_circuit_duration,
            s(1),
            s(u64::from(u32::MAX)),
        )?;
        if !(1..=1 << 20).contains(&self.relay_max_circuit_mib) {
            return bad("relay_max_circuit_mib", "must be between 1 and 1048576");
        }
        if !(64 * 1024..=16 * 1024 * 1024).contains(&self.max_frame) {
            return bad("max_frame", "must be between 65536 and 16777216 bytes");
        }
        Ok(())
    }
}

/// Applies `CPNS_AUTH_<KEY>` variables to `table`. The type of each key's default decides how
/// the text is read: lists are comma-separated, numbers and booleans are parsed, the rest are
/// strings. Variables that name no key (like `CPNS_AUTH_CONFIG`) are ignored.
fn merge_env(
    table: &mut toml::Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    // Serializing our own plain struct cannot fail; without it there is nothing to merge.
    let Ok(defaults) = toml::Table::try_from(Config::default()) else {
        return Ok(());
    };
    for (var, text) in vars {
        let Some(suffix) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let key = suffix.to_ascii_lowercase();
        let Some(default) = defaults.get(&key) else {
            continue;
        };
        let env_err = |reason: String| ConfigError::Env {
            var: var.clone(),
            key: key.clone(),
            reason,
        };
        let value = match default {
            toml::Value::Array(_) => toml::Value::Array(
                text.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.to_owned()))
                    .collect(),
            ),
            toml::Value::Integer(_) => toml::Value::Integer(
                text.trim()
                    .parse()
                    .map_err(|e| env_err(format!("not an integer: {e}")))?,
            ),
            toml::Value::Boolean(_) => toml::Value::Boolean(
                text.trim()
                    .parse()
                    .map_err(|e| env_err(format!("not true/false: {e}")))?,
            ),
            _ => toml::Value::String(text),
        };
        table.insert(key, value);
    }
    Ok(())
}

/// Serde for durations as humantime text (`30s`, `1h 30m`, `365days`).
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("bad duration {text:?}: {e}")))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_round_trips_through_toml() {
        let c = Config::default();
        c.validate().unwrap();
        let text = toml::to_string(&c).unwrap();
        assert!(text.contains("challenge_ttl = \"30s\""), "{text}");
        assert_eq!(Config::from_toml_str(&text).unwrap(), c);
    }

    #[test]
    fn partial_file_keeps_defaults() {
        let c = Config::from_toml_str("admin_port = 7070\nchallenge_ttl = \"5s\"\n").unwrap();
        assert_eq!(c.admin_port, 7070);
        assert_eq!(c.challenge_ttl, Duration::from_secs(5));
        assert_eq!(c.session_ttl, Config::default().session_ttl);
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::from_toml_str("admin_prot = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("admin_prot"), "{e}");
        let e = Config::from_toml_str("admin_port = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("admin_port"), "{e}");
        let e = Config::from_toml_str("challenge_ttl = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("challenge_ttl"), "{e}");
        let e = Config::from_toml_str("max_sessions = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_sessions"), "{e}");
        let e = Config::from_toml_str("listen = [\"not an address\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen"), "{e}");
        let e = Config::from_toml_str("listen = []\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen"), "{e}");
    }

    #[test]
    fn env_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("auth.toml");
        std::fs::write(&file, "admin_port = 1\nsession_ttl = \"2h\"\n").unwrap();
        let vars = [
            ("CPNS_AUTH_ADMIN_PORT", "2"),
            (
                "CPNS_AUTH_LISTEN",
                "/ip4/127.0.0.1/tcp/1, /ip4/127.0.0.1/tcp/2",
            ),
            ("CPNS_AUTH_PUSH_KEYS", "false"),
            ("CPNS_AUTH_CONFIG", "ignored"),
            ("OTHER", "ignored"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let c = Config::load(Some(&file), vars).unwrap();
        assert_eq!(c.admin_port, 2);
        assert_eq!(c.session_ttl, Duration::from_secs(7200));
        assert_eq!(c.listen.len(), 2);
        assert!(!c.push_keys);
        let e = Config::load(
            None,
            [("CPNS_AUTH_ADMIN_PORT".to_owned(), "many".to_owned())],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("CPNS_AUTH_ADMIN_PORT") && e.contains("admin_port"),
            "{e}"
        );
    }
}
