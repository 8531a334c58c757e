//! Settings: parsed and validated once, at start, into domain types.
//!
//! Every setting comes from the environment (`FERRY_*`) or the matching `ferry serve` flag; the
//! raw strings arrive from clap ([`crate::cli::ServeArgs`]) and are turned into [`Settings`] here.
//! A bad value is a [`ConfigError`] that names the variable and says what is accepted.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::core::checksum::ChecksumMode;
use crate::core::concurrency::Concurrency;
use crate::core::plan::{MAX_PART_SIZE, MIN_PART_SIZE};
use crate::core::spec::SymlinkPolicy;

/// Defaults, in one place; `--help` shows them.
pub mod defaults {
    pub const LISTEN: &str = "127.0.0.1:8080";
    pub const DATABASE_URL: &str = "sqlite://ferry.db";
    pub const CHUNK_SIZE: &str = "5MiB";
    pub const CONCURRENCY: &str = "auto";
    pub const MAX_BANDWIDTH: &str = "unlimited";
    pub const SCAN_INTERVAL: &str = "5m";
    pub const RESYNC_INTERVAL: &str = "1h";
    pub const LOG: &str = "info";
    pub const LOG_FORMAT: &str = "json";
    pub const S3_FORCE_PATH_STYLE: &str = "false";
    pub const MAX_ATTEMPTS: &str = "5";
    pub const CHECKSUM: &str = "auto";
    pub const SETTLE_TIME: &str = "3s";
    pub const FOLLOW_SYMLINKS: &str = "never";
}

pub use crate::core::concurrency::MAX_CONCURRENCY;

/// The lowest bandwidth cap taken: below this, a request could not finish within S3's timeouts.
pub const MIN_BANDWIDTH: u64 = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// Where the SQLite database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseLocation {
    File(PathBuf),
    Memory,
}

/// Validated settings of `ferry serve`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub database: DatabaseLocation,
    pub chunk_size: u64,
    pub concurrency: Concurrency,
    /// FERRY_MAX_BANDWIDTH: bytes per second every upload shares; None: no cap.
    pub max_bandwidth: Option<u64>,
    pub scan_interval: Duration,
    /// How often each job's objects are listed and compared with the records; None: never.
    pub resync_interval: Option<Duration>,
    pub log_filter: String,
    pub log_format: LogFormat,
    pub s3_force_path_style: bool,
    pub max_attempts: u32,
    pub checksum: ChecksumMode,
    /// FERRY_CHECKSUM named the algorithm: no fallback when a store refuses its headers.
    pub checksum_pinned: bool,
    pub settle_time: Duration,
    pub manifests_dir: Option<PathBuf>,
    /// When set, every /uploads and /manifests request needs `Authorization: Bearer <token>`.
    pub api_token: Option<ApiToken>,
    /// When not empty, a job's source folder must lie inside one of these (canonical) folders.
    pub allowed_roots: Vec<PathBuf>,
    /// Which symbolic links in a source folder are followed.
    pub follow_symlinks: SymlinkPolicy,
}

/// The API token; its Debug never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

impl ApiToken {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

/// The shortest API token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// The most attempts a file may be given.
pub const MAX_MAX_ATTEMPTS: u32 = 100;

/// The raw values, as given (environment or flags).
#[derive(Debug, Clone)]
pub struct RawSettings {
    pub listen: String,
    pub database_url: String,
    pub chunk_size: String,
    pub concurrency: String,
    pub max_bandwidth: String,
    pub scan_interval: String,
    pub resync_interval: String,
    pub log: String,
    pub log_format: String,
    pub s3_force_path_style: String,
    pub max_attempts: String,
    pub checksum: String,
    pub settle_time: String,
    pub manifests_dir: Option<String>,
    pub api_token: Option<String>,
    pub allowed_roots: Option<String>,
    pub insecure_listen: String,
    pub follow_symlinks: String,
}

impl Default for RawSettings {
    fn default() -> Self {
        Self {
            listen: defaults::LISTEN.into(),
            database_url: defaults::DATABASE_URL.into(),
            chunk_size: defaults::CHUNK_SIZE.into(),
            concurrency: defaults::CONCURRENCY.into(),
            max_bandwidth: defaults::MAX_BANDWIDTH.into(),
            scan_interval: defaults::SCAN_INTERVAL.into(),
            resync_interval: defaults::RESYNC_INTERVAL.into(),
            log: defaults::LOG.into(),
            log_format: defaults::LOG_FORMAT.into(),
            s3_force_path_style: defaults::S3_FORCE_PATH_STYLE.into(),
            max_attempts: defaults::MAX_ATTEMPTS.into(),
            checksum: defaults::CHECKSUM.into(),
            settle_time: defaults::SETTLE_TIME.into(),
            manifests_dir: None,
            api_token: None,
            allowed_roots: None,
            insecure_listen: "false".into(),
            follow_symlinks: defaults::FOLLOW_SYMLINKS.into(),
        }
    }
}

/// A setting with a value ferry cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: &'static str,
    pub value: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {} {:?}: {}",
            self.variable, self.value, self.reason
        )
    }
}

impl std::error::Error for ConfigError {}

impl RawSettings {
    /// Validates every value; the first bad one is reported.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let err = |variable: &'static str, value: &str, reason: String| ConfigError {
            variable,
            value: value.to_owned(),
            reason,
        };
        let listen = self.listen.trim().parse::<SocketAddr>().map_err(|_| {
            err(
                "FERRY_LISTEN",
                &self.listen,
                "expected an IP address and port, such as 127.0.0.1:8080 or [::]:8080".into(),
            )
        })?;
        let database = parse_database_url(&self.database_url)
            .map_err(|reason| err("FERRY_DATABASE_URL", &self.database_url, reason))?;
        let chunk_size = parse_byte_size(&self.chunk_size)
            .map_err(|reason| err("FERRY_CHUNK_SIZE", &self.chunk_size, reason))?;
        if chunk_size < MIN_PART_SIZE {
            return Err(err(
                "FERRY_CHUNK_SIZE",
                &self.chunk_size,
                "S3 needs parts of at least 5 MiB (5242880 bytes); use 5MiB or more".into(),
            ));
        }
        if chunk_size > MAX_PART_SIZE {
            return Err(err(
                "FERRY_CHUNK_SIZE",
                &self.chunk_size,
                "S3 takes parts of at most 5 GiB; use 5GiB or less".into(),
            ));
        }
        let concurrency = parse_concurrency(&self.concurrency)
            .map_err(|reason| err("FERRY_CONCURRENCY", &self.concurrency, reason))?;
        let max_bandwidth = parse_bandwidth(&self.max_bandwidth)
            .map_err(|reason| err("FERRY_MAX_BANDWIDTH", &self.max_bandwidth, reason))?;
        let scan_interval = parse_duration(&self.scan_interval)
            .map_err(|reason| err("FERRY_SCAN_INTERVAL", &self.scan_interval, reason))?;
        if scan_interval < Duration::from_secs(1) {
            return Err(err(
                "FERRY_SCAN_INTERVAL",
                &self.scan_interval,
                "the interval must be at least 1s".into(),
            ));
        }
        let resync_interval = match self.resync_interval.trim() {
            "off" => None,
            raw => {
                let interval = parse_duration(raw).map_err(|reason| {
                    err(
                        "FERRY_RESYNC_INTERVAL",
                        &self.resync_interval,
                        format!("{reason}, or off"),
                    )
                })?;
                if interval < Duration::from_secs(1) {
                    return Err(err(
                        "FERRY_RESYNC_INTERVAL",
                        &self.resync_interval,
                        "the interval must be at least 1s (or off)".into(),
                    ));
                }
                Some(interval)
            }
        };
        tracing_subscriber::EnvFilter::try_new(&self.log).map_err(|e| {
            err(
                "FERRY_LOG",
                &self.log,
                format!("expected a RUST_LOG-style filter such as info or ferry=debug,info ({e})"),
            )
        })?;
        let log_format = match self.log_format.trim().to_ascii_lowercase().as_str() {
            "json" => LogFormat::Json,
            "text" => LogFormat::Text,
            _ => {
                return Err(err(
                    "FERRY_LOG_FORMAT",
                    &self.log_format,
                    "expected json or text".into(),
                ));
            }
        };
        let s3_force_path_style = parse_bool(&self.s3_force_path_style).ok_or_else(|| {
            err(
                "FERRY_S3_FORCE_PATH_STYLE",
                &self.s3_force_path_style,
                "expected true or false".into(),
            )
        })?;
        let max_attempts = self
            .max_attempts
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_MAX_ATTEMPTS).contains(n))
            .ok_or_else(|| {
                err(
                    "FERRY_MAX_ATTEMPTS",
                    &self.max_attempts,
                    format!("expected a whole number of attempts from 1 to {MAX_MAX_ATTEMPTS}"),
                )
            })?;
        // `auto`: CRC32C, and MD5 proofs alone for a store that refuses checksum headers. A
        // named algorithm pins it.
        let checksum_pinned = !self.checksum.trim().eq_ignore_ascii_case("auto");
        let checksum = if checksum_pinned {
            ChecksumMode::parse(&self.checksum)
        } else {
            Some(ChecksumMode::Crc32c)
        }
        .ok_or_else(|| {
            err(
                "FERRY_CHECKSUM",
                &self.checksum,
                "expected auto, or one of crc32c, crc32 or none to pin it".into(),
            )
        })?;
        let follow_symlinks = SymlinkPolicy::parse(&self.follow_symlinks).ok_or_else(|| {
            err(
                "FERRY_FOLLOW_SYMLINKS",
                &self.follow_symlinks,
                "expected never or inside".into(),
            )
        })?;
        let settle_time = parse_duration(&self.settle_time)
            .map_err(|reason| err("FERRY_SETTLE_TIME", &self.settle_time, reason))?;
        let manifests_dir = match self.manifests_dir.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(dir) => match std::fs::metadata(dir) {
                Ok(m) if m.is_dir() => Some(PathBuf::from(dir)),
                Ok(_) => {
                    return Err(err(
                        "FERRY_MANIFESTS_DIR",
                        dir,
                        "it is not a folder; give the folder that holds the .yaml manifests".into(),
                    ));
                }
                Err(e) => {
                    return Err(err(
                        "FERRY_MANIFESTS_DIR",
                        dir,
                        format!("cannot read it ({e}); give an existing folder of .yaml manifests"),
                    ));
                }
            },
        };
        let api_token = match self.api_token.as_deref() {
            None | Some("") => None,
            Some(t)
                if t.len() < MIN_TOKEN_LEN
                    || t.chars().any(|c| c.is_whitespace() || c.is_control()) =>
            {
                return Err(ConfigError {
                    variable: "FERRY_API_TOKEN",
                    value: "<redacted>".into(),
                    reason: format!(
                        "the token must be at least {MIN_TOKEN_LEN} characters, without spaces; generate one with `openssl rand -hex 32`"
                    ),
                });
            }
            Some(t) => Some(ApiToken(t.to_owned())),
        };
        let insecure_listen = parse_bool(&self.insecure_listen).ok_or_else(|| {
            err(
                "FERRY_INSECURE_LISTEN",
                &self.insecure_listen,
                "expected true or false".into(),
            )
        })?;
        if !listen.ip().is_loopback() && api_token.is_none() && !insecure_listen {
            return Err(err(
                "FERRY_LISTEN",
                &self.listen,
                "ferry refuses to listen beyond loopback without FERRY_API_TOKEN: anyone who reaches it could make it read any file it can read and send it to any bucket its credentials reach. Set FERRY_API_TOKEN, or FERRY_INSECURE_LISTEN=true if a proxy in front of ferry authenticates".into(),
            ));
        }
        let mut allowed_roots = Vec::new();
        for root in self
            .allowed_roots
            .as_deref()
            .unwrap_or("")
            .split(':')
            .map(str::trim)
            .filter(|r| !r.is_empty())
        {
            let path = PathBuf::from(root);
            if !path.is_absolute() {
                return Err(err(
                    "FERRY_ALLOWED_ROOTS",
                    root,
                    "each root must be an absolute folder; separate them with ':'".into(),
                ));
            }
            match std::fs::canonicalize(&path) {
                Ok(c) if c.is_dir() => allowed_roots.push(c),
                Ok(_) => {
                    return Err(err(
                        "FERRY_ALLOWED_ROOTS",
                        root,
                        "it is not a folder".into(),
                    ));
                }
                Err(e) => {
                    return Err(err(
                        "FERRY_ALLOWED_ROOTS",
                        root,
                        format!("cannot read it ({e}); each root must be an existing folder"),
                    ));
                }
            }
        }
        Ok(Settings {
            listen,
            database,
            chunk_size,
            concurrency,
            max_bandwidth,
            scan_interval,
            resync_interval,
            log_filter: self.log.clone(),
            log_format,
            s3_force_path_style,
            max_attempts,
            checksum,
            checksum_pinned,
            settle_time,
            manifests_dir,
            api_token,
            allowed_roots,
            follow_symlinks,
        })
    }
}

/// `sqlite://path`, `sqlite:path`, `sqlite::memory:` or a plain path.
pub fn parse_database_url(raw: &str) -> Result<DatabaseLocation, String> {
    let raw = raw.trim();
    let rest = raw
        .strip_prefix("sqlite://")
        .or_else(|| raw.strip_prefix("sqlite:"))
        .unwrap_or(raw);
    // Query parameters (sqlite://x.db?mode=rwc) are not ours to interpret: refuse them clearly.
    if rest.contains('?') {
        return Err(
            "query parameters are not supported; give sqlite://PATH or a plain path".into(),
        );
    }
    if raw.contains("://") && !raw.starts_with("sqlite://") {
        return Err("only SQLite is supported; give sqlite://PATH or a plain path".into());
    }
    match rest {
        "" => Err("the path is empty; give sqlite://PATH or a plain path".into()),
        ":memory:" => Ok(DatabaseLocation::Memory),
        path => Ok(DatabaseLocation::File(PathBuf::from(path))),
    }
}

/// Bytes, or a number with B, KB, KiB, MB, MiB, GB, GiB (decimal or binary), case-insensitive.
pub fn parse_byte_size(raw: &str) -> Result<u64, String> {
    const HELP: &str = "expected bytes or a size with a unit, such as 5242880, 8MiB, 16MB or 1GiB";
    let s = raw.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return Err(HELP.into()),
    };
    if number.is_empty() {
        return Err(HELP.into());
    }
    let bytes = if let Some((whole, frac)) = number.split_once('.') {
        // "1.5GiB": exact arithmetic on the decimal digits, no floating point.
        if frac.contains('.') || (whole.is_empty() && frac.is_empty()) {
            return Err(HELP.into());
        }
        let scale = 10u128
            .checked_pow(frac.len() as u32)
            .ok_or_else(|| HELP.to_owned())?;
        let digits: u128 = format!("{whole}{frac}")
            .parse()
            .map_err(|_| HELP.to_owned())?;
        let value = digits * u128::from(multiplier);
        if !value.is_multiple_of(scale) {
            return Err(format!("{HELP}; the size must come out to whole bytes"));
        }
        u64::try_from(value / scale).map_err(|_| "the size is too large".to_owned())?
    } else {
        let n: u64 = number.parse().map_err(|_| HELP.to_owned())?;
        n.checked_mul(multiplier)
            .ok_or_else(|| "the size is too large".to_owned())?
    };
    Ok(bytes)
}

/// A duration such as 500ms, 2s, 30s, 5m, 1h or 1d; a bare number is seconds.
/// `auto` (or empty): adapted to the link; a whole number from 1 to MAX_CONCURRENCY pins it.
pub fn parse_concurrency(raw: &str) -> Result<Concurrency, String> {
    let raw = raw.trim();
    if raw.is_empty() || raw.eq_ignore_ascii_case("auto") {
        return Ok(Concurrency::Auto);
    }
    raw.parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_CONCURRENCY).contains(n))
        .map(Concurrency::Pinned)
        .ok_or_else(|| {
            format!(
                "expected auto (adapted to the link) or a whole number of files from 1 to {MAX_CONCURRENCY}"
            )
        })
}

/// `unlimited` (or empty, `0`, `off`): no cap; otherwise bytes per second, with KiB/MiB/GiB.
pub fn parse_bandwidth(raw: &str) -> Result<Option<u64>, String> {
    let trimmed = raw.trim();
    if trimmed.is_empty()
        || ["unlimited", "off", "0"]
            .iter()
            .any(|w| trimmed.eq_ignore_ascii_case(w))
    {
        return Ok(None);
    }
    let accepted = "expected bytes per second, with an optional KiB, MiB or GiB (50MiB), of at least 64KiB; or unlimited";
    // `50MiB/s` reads as it is meant.
    let size = trimmed
        .strip_suffix("/s")
        .or_else(|| trimmed.strip_suffix("/S"))
        .unwrap_or(trimmed);
    let rate = parse_byte_size(size).map_err(|_| accepted.to_owned())?;
    if rate < MIN_BANDWIDTH {
        return Err(format!("{accepted} (a slower cap would time requests out)"));
    }
    Ok(Some(rate))
}

pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    const HELP: &str =
        "expected a duration such as 2s, 30s, 5m, 1h or 1h30m (a bare number is seconds)";
    let s = raw.trim();
    // A bare number is seconds, as it always was here (humantime wants a unit).
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| "the duration is too large".into());
    }
    humantime::parse_duration(s).map_err(|e| format!("{HELP}: {e}"))
}

fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_accept_units() {
        assert_eq!(parse_byte_size("5242880"), Ok(5 << 20));
        assert_eq!(parse_byte_size("5MiB"), Ok(5 << 20));
        assert_eq!(parse_byte_size("8 mib"), Ok(8 << 20));
        assert_eq!(parse_byte_size("16MB"), Ok(16_000_000));
        assert_eq!(parse_byte_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_byte_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_byte_size("64KiB"), Ok(64 << 10));
    }

    #[test]
    fn byte_sizes_reject_nonsense() {
        for bad in [
            "",
            "MiB",
            "5XB",
            "-5",
            "1.2.3MiB",
            "0.3B",
            "99999999999999999999GiB",
        ] {
            assert!(parse_byte_size(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5 minutes"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert!(parse_duration("soon").unwrap_err().contains("1h30m"));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn database_urls() {
        assert_eq!(
            parse_database_url("sqlite://ferry.db"),
            Ok(DatabaseLocation::File("ferry.db".into()))
        );
        assert_eq!(
            parse_database_url("sqlite:///var/lib/ferry/ferry.db"),
            Ok(DatabaseLocation::File("/var/lib/ferry/ferry.db".into()))
        );
        assert_eq!(
            parse_database_url("/tmp/x.db"),
            Ok(DatabaseLocation::File("/tmp/x.db".into()))
        );
        assert_eq!(
            parse_database_url("sqlite::memory:"),
            Ok(DatabaseLocation::Memory)
        );
        assert!(parse_database_url("postgres://x").is_err());
        assert!(parse_database_url("sqlite://").is_err());
        assert!(parse_database_url("sqlite://x.db?mode=ro").is_err());
    }

    #[test]
    fn concurrency_is_auto_or_a_pinned_number() {
        assert_eq!(parse_concurrency("auto"), Ok(Concurrency::Auto));
        assert_eq!(parse_concurrency(" AUTO "), Ok(Concurrency::Auto));
        assert_eq!(parse_concurrency("64"), Ok(Concurrency::Pinned(64)));
        assert_eq!(parse_concurrency("256"), Ok(Concurrency::Pinned(256)));
        for bad in ["0", "257", "-1", "many", "1.5"] {
            let e = parse_concurrency(bad).unwrap_err();
            assert!(e.contains("auto") && e.contains("256"), "{bad}: {e}");
        }
    }

    #[test]
    fn bandwidth_is_bytes_per_second_or_unlimited() {
        assert_eq!(parse_bandwidth("unlimited"), Ok(None));
        assert_eq!(parse_bandwidth(""), Ok(None));
        assert_eq!(parse_bandwidth("0"), Ok(None));
        assert_eq!(parse_bandwidth("off"), Ok(None));
        assert_eq!(parse_bandwidth("50MiB"), Ok(Some(50 << 20)));
        assert_eq!(parse_bandwidth("50MiB/s"), Ok(Some(50 << 20)));
        assert_eq!(parse_bandwidth("1.5GiB"), Ok(Some(3 << 29)));
        assert_eq!(parse_bandwidth("64KiB"), Ok(Some(64 << 10)));
        assert!(
            parse_bandwidth("1KiB")
                .unwrap_err()
                .contains("at least 64KiB")
        );
        assert!(parse_bandwidth("-5MiB").is_err());
        assert!(parse_bandwidth("50 megabits").is_err());
    }

    #[test]
    fn defaults_are_valid() {
        let s = RawSettings::default()
            .validate()
            .expect("defaults validate");
        assert_eq!(s.chunk_size, 5 << 20);
        assert_eq!(s.concurrency, Concurrency::Auto);
        assert_eq!(s.max_bandwidth, None);
        assert_eq!(s.scan_interval, Duration::from_secs(300));
        assert_eq!(s.log_format, LogFormat::Json);
        assert!(!s.s3_force_path_style);
        assert_eq!(s.max_attempts, 5);
        assert_eq!(s.checksum, ChecksumMode::Crc32c);
        assert_eq!(s.settle_time, Duration::from_secs(3));
    }

    #[test]
    fn listening_beyond_loopback_needs_a_token_or_an_explicit_opt_out() {
        let open = RawSettings {
            listen: "0.0.0.0:8080".into(),
            ..RawSettings::default()
        };
        let e = open.validate().unwrap_err();
        assert_eq!(e.variable, "FERRY_LISTEN");
        assert!(e.reason.contains("FERRY_API_TOKEN"));
        let with_token = RawSettings {
            api_token: Some("0123456789abcdef0123".into()),
            ..open.clone()
        };
        assert!(with_token.validate().is_ok());
        let opted_out = RawSettings {
            insecure_listen: "true".into(),
            ..open
        };
        assert!(opted_out.validate().is_ok());
        let short = RawSettings {
            api_token: Some("short".into()),
            ..RawSettings::default()
        };
        let e = short.validate().unwrap_err();
        assert_eq!(e.variable, "FERRY_API_TOKEN");
        assert!(!e.to_string().contains("short"), "the token leaked: {e}");
        let token = ApiToken("secret-secret-secret".into());
        assert!(!format!("{token:?}").contains("secret"));
    }

    #[test]
    fn errors_name_the_variable() {
        let raw = RawSettings {
            chunk_size: "4MiB".into(),
            ..RawSettings::default()
        };
        let e = raw.validate().unwrap_err();
        assert_eq!(e.variable, "FERRY_CHUNK_SIZE");
        assert!(e.to_string().contains("FERRY_CHUNK_SIZE"));
        assert!(e.to_string().contains("5 MiB"));

        let raw = RawSettings {
            concurrency: "0".into(),
            ..RawSettings::default()
        };
        assert_eq!(raw.validate().unwrap_err().variable, "FERRY_CONCURRENCY");

        let raw = RawSettings {
            max_bandwidth: "fast".into(),
            ..RawSettings::default()
        };
        let e = raw.validate().unwrap_err();
        assert_eq!(e.variable, "FERRY_MAX_BANDWIDTH");
        assert!(e.reason.contains("50MiB"), "{e}");

        let raw = RawSettings {
            log_format: "xml".into(),
            ..RawSettings::default()
        };
        assert_eq!(raw.validate().unwrap_err().variable, "FERRY_LOG_FORMAT");

        let raw = RawSettings {
            max_attempts: "0".into(),
            ..RawSettings::default()
        };
        assert_eq!(raw.validate().unwrap_err().variable, "FERRY_MAX_ATTEMPTS");

        let raw = RawSettings {
            checksum: "md5".into(),
            ..RawSettings::default()
        };
        assert_eq!(raw.validate().unwrap_err().variable, "FERRY_CHECKSUM");

        let raw = RawSettings {
            listen: "localhost".into(),
            ..RawSettings::default()
        };
        assert_eq!(raw.validate().unwrap_err().variable, "FERRY_LISTEN");

        let raw = RawSettings {
            s3_force_path_style: "maybe".into(),
            ..RawSettings::default()
        };
        assert_eq!(
            raw.validate().unwrap_err().variable,
            "FERRY_S3_FORCE_PATH_STYLE"
        );
    }
}
