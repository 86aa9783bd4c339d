//! Settings: embedded defaults, then `tollgate.toml`, then environment variables.
//!
//! Every setting is declared once in [`SETTINGS`] with its file key, its
//! environment variable, its default and one line of documentation; the same
//! table feeds parsing, error messages and `docs/configuration.md` (a test keeps
//! the document in step with the table). Invalid values stop start-up with one
//! line that names the setting, where the value came from and what is wrong.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One setting: where it is read from and what it means.
#[derive(Debug, Clone, Copy)]
pub struct SettingSpec {
    /// Key in `tollgate.toml`.
    pub key: &'static str,
    /// Environment variable that overrides the file.
    pub env: &'static str,
    /// Default, as text; empty means unset.
    pub default: &'static str,
    /// What the setting does.
    pub doc: &'static str,
}

/// Every setting Tollgate reads, in the order the docs list them.
pub const SETTINGS: &[SettingSpec] = &[
    SettingSpec {
        key: "data_dir",
        env: "TOLLGATE_DATA_DIR",
        default: "./data",
        doc: "Directory for the embedded SQLite store, the embedded usage store and demo state; created when missing.",
    },
    SettingSpec {
        key: "database_url",
        env: "DATABASE_URL",
        default: "",
        doc: "Control-plane database. Unset: SQLite file `tollgate.db` in the data dir. `sqlite://PATH` or `postgres://user@host/db` to choose.",
    },
    SettingSpec {
        key: "clickhouse_url",
        env: "CLICKHOUSE_URL",
        default: "",
        doc: "ClickHouse HTTP endpoint for usage events, e.g. `http://127.0.0.1:8123`. Unset: embedded usage store `usage.db` in the data dir.",
    },
    SettingSpec {
        key: "clickhouse_database",
        env: "TOLLGATE_CLICKHOUSE_DATABASE",
        default: "tollgate",
        doc: "ClickHouse database that holds Tollgate's tables; created by `tollgate migrate`.",
    },
    SettingSpec {
        key: "clickhouse_user",
        env: "TOLLGATE_CLICKHOUSE_USER",
        default: "",
        doc: "ClickHouse user name (unset: the server's default user).",
    },
    SettingSpec {
        key: "clickhouse_password",
        env: "TOLLGATE_CLICKHOUSE_PASSWORD",
        default: "",
        doc: "ClickHouse password.",
    },
    SettingSpec {
        key: "clickhouse_validation",
        env: "TOLLGATE_CLICKHOUSE_VALIDATION",
        default: "false",
        doc: "Let the ClickHouse client check row types against the server schema. Needs ClickHouse 24.x or later; keep false for older servers.",
    },
    SettingSpec {
        key: "gateway_addr",
        env: "TOLLGATE_GATEWAY_ADDR",
        default: "0.0.0.0:8000",
        doc: "Address the gateway listens on.",
    },
    SettingSpec {
        key: "portal_addr",
        env: "TOLLGATE_PORTAL_ADDR",
        default: "0.0.0.0:8080",
        doc: "Address the developer portal listens on.",
    },
    SettingSpec {
        key: "admin_addr",
        env: "TOLLGATE_ADMIN_ADDR",
        default: "127.0.0.1:8001",
        doc: "Address the admin REST API listens on (loopback by default).",
    },
    SettingSpec {
        key: "admin_token",
        env: "TOLLGATE_ADMIN_TOKEN",
        default: "",
        doc: "Bearer token for the admin REST API, at least 16 characters. Unset: the admin API refuses every call (`up --demo` generates one).",
    },
    SettingSpec {
        key: "public_gateway_url",
        env: "TOLLGATE_PUBLIC_GATEWAY_URL",
        default: "",
        doc: "Gateway URL shown to developers (portal, demo output). Unset: derived from `gateway_addr`.",
    },
    SettingSpec {
        key: "upstream_timeout_ms",
        env: "TOLLGATE_UPSTREAM_TIMEOUT_MS",
        default: "30000",
        doc: "How long the gateway waits for an upstream's response headers before answering 504.",
    },
    SettingSpec {
        key: "upstream_ca_file",
        env: "TOLLGATE_UPSTREAM_CA_FILE",
        default: "",
        doc: "A PEM file of CA certificates trusted for https upstreams, besides the public roots (an internal CA, say). Unset: public roots only.",
    },
    SettingSpec {
        key: "upstream_read_timeout_ms",
        env: "TOLLGATE_UPSTREAM_READ_TIMEOUT_MS",
        default: "30000",
        doc: "Longest silence from an upstream while its response body streams; past it the gateway cuts the response.",
    },
    SettingSpec {
        key: "upstream_total_timeout_ms",
        env: "TOLLGATE_UPSTREAM_TOTAL_TIMEOUT_MS",
        default: "",
        doc: "Longest time for a whole upstream exchange, head and body. Unset: no limit beyond the head and read timeouts (streams may last).",
    },
    SettingSpec {
        key: "client_timeout_ms",
        env: "TOLLGATE_CLIENT_TIMEOUT_MS",
        default: "60000",
        doc: "Longest a client connection may take to send its next call, from the previous answer (or from connecting) to the call's last byte; past it the gateway closes the connection (idle keep-alive connections and calls sent too slowly; an HTTP/2 connection once it has had no call in progress for this long).",
    },
    SettingSpec {
        key: "upstream_connect_timeout_ms",
        env: "TOLLGATE_UPSTREAM_CONNECT_TIMEOUT_MS",
        default: "5000",
        doc: "How long the gateway waits for a TCP connection to an upstream.",
    },
    SettingSpec {
        key: "config_poll_interval_ms",
        env: "TOLLGATE_CONFIG_POLL_INTERVAL_MS",
        default: "500",
        doc: "How often the gateway checks the configuration version in the database (the safety net behind LISTEN/NOTIFY).",
    },
    SettingSpec {
        key: "usage_flush_interval_ms",
        env: "TOLLGATE_USAGE_FLUSH_INTERVAL_MS",
        default: "1000",
        doc: "Longest time a usage event waits in the spool before it is shipped to the usage store.",
    },
    SettingSpec {
        key: "usage_batch_size",
        env: "TOLLGATE_USAGE_BATCH_SIZE",
        default: "100000",
        doc: "Most usage events written in one insert (a full spool segment holds about 100,000).",
    },
    SettingSpec {
        key: "usage_queue_capacity",
        env: "TOLLGATE_USAGE_QUEUE_CAPACITY",
        default: "100000",
        doc: "Usage events held in memory between two spool writes; beyond it events are dropped and counted.",
    },
    SettingSpec {
        key: "usage_spool_sync_interval_ms",
        env: "TOLLGATE_USAGE_SPOOL_SYNC_INTERVAL_MS",
        default: "200",
        doc: "How often queued usage events are appended to the spool (`spool/` in the data dir) and synced to disk; bounds what a crash can lose.",
    },
    SettingSpec {
        key: "usage_spool_max_bytes",
        env: "TOLLGATE_USAGE_SPOOL_MAX_BYTES",
        default: "1073741824",
        doc: "Most bytes of unshipped usage the spool keeps on disk (40 to 80 bytes per event); when full, the gateway keeps serving and drops events, counted by reason.",
    },
    SettingSpec {
        key: "usage_retention_days",
        env: "TOLLGATE_USAGE_RETENTION_DAYS",
        default: "400",
        doc: "Days raw usage events are kept; older ones are removed (ClickHouse: whole monthly partitions, once every day of the month is older).",
    },
    SettingSpec {
        key: "usage_rollup_retention_days",
        env: "TOLLGATE_USAGE_ROLLUP_RETENTION_DAYS",
        default: "1100",
        doc: "Days the usage rollups are kept (ClickHouse: whole monthly partitions; embedded store: rows whose bucket ended before the cut-off).",
    },
    SettingSpec {
        key: "node_name",
        env: "TOLLGATE_NODE_NAME",
        default: "",
        doc: "Name of this node in usage events. Unset: the host name.",
    },
    SettingSpec {
        key: "redis_url",
        env: "TOLLGATE_REDIS_URL",
        default: "",
        doc: "Redis for cluster-wide rate limits (and quota counters with `quota_counter = \"redis\"`), e.g. `redis://127.0.0.1:6379`. Unset: each gateway limits on its own.",
    },
    SettingSpec {
        key: "redis_timeout_ms",
        env: "TOLLGATE_REDIS_TIMEOUT_MS",
        default: "100",
        doc: "Longest wait for one answer from Redis: a rate-limit decision (then the failure mode applies) or a quota lease (then the call is admitted).",
    },
    SettingSpec {
        key: "rate_limit_failure_mode",
        env: "TOLLGATE_RATE_LIMIT_FAILURE_MODE",
        default: "open",
        doc: "When Redis cannot decide: `open` falls back to this gateway's own limits, `closed` refuses the call with 503.",
    },
    SettingSpec {
        key: "token_secret",
        env: "TOLLGATE_TOKEN_SECRET",
        default: "",
        doc: "Secret (at least 32 characters, the same on every gateway) that signs the access tokens of the OAuth2 client-credentials endpoint `/oauth/token`. Unset: the endpoint is off.",
    },
    SettingSpec {
        key: "token_ttl_secs",
        env: "TOLLGATE_TOKEN_TTL_SECS",
        default: "3600",
        doc: "Lifetime of access tokens issued by `/oauth/token`, in seconds.",
    },
    SettingSpec {
        key: "quota_lease_size",
        env: "TOLLGATE_QUOTA_LEASE_SIZE",
        default: "100",
        doc: "Smallest block of calls a gateway leases at once from a subscription's quota counter (busy subscriptions lease up to 64 times more, a hard quota at most 1% of its included calls); bounds how many calls a hard quota may under-admit per gateway.",
    },
    SettingSpec {
        key: "quota_counter",
        env: "TOLLGATE_QUOTA_COUNTER",
        default: "database",
        doc: "Where gateways share quota counters: `database` (the control-plane database) or `redis` (the Redis of `redis_url`, which must then be set).",
    },
    SettingSpec {
        key: "access_log",
        env: "TOLLGATE_ACCESS_LOG",
        default: "off",
        doc: "`json` writes one JSON object per answered call to standard output (the usage event's fields); `off` writes none.",
    },
    SettingSpec {
        key: "portal_public_url",
        env: "TOLLGATE_PORTAL_PUBLIC_URL",
        default: "",
        doc: "The portal's URL as browsers reach it, used in e-mailed links; an `https://` URL also marks session cookies `Secure`. Unset: derived from `portal_addr` (http).",
    },
    SettingSpec {
        key: "portal_name",
        env: "TOLLGATE_PORTAL_NAME",
        default: "Tollgate",
        doc: "Name shown in the portal's header, page titles and e-mails.",
    },
    SettingSpec {
        key: "portal_logo_file",
        env: "TOLLGATE_PORTAL_LOGO_FILE",
        default: "",
        doc: "An image (SVG, PNG, JPEG or WebP, at most 256 KiB) shown in the portal's header before its name; read at start. Unset: the name alone.",
    },
    SettingSpec {
        key: "portal_brand_color",
        env: "TOLLGATE_PORTAL_BRAND_COLOR",
        default: "",
        doc: "The portal's main colour as `#RRGGBB` (buttons, links, accents). It must reach 4.5:1 contrast on white so text in it stays readable. Unset: Tollgate's blue.",
    },
    SettingSpec {
        key: "portal_client_ip_header",
        env: "TOLLGATE_PORTAL_CLIENT_IP_HEADER",
        default: "",
        doc: "Header a trusted reverse proxy sets to the client's address (e.g. `X-Forwarded-For`; its last address is used), for per-address log-in throttling. Unset: the TCP peer address.",
    },
    SettingSpec {
        key: "smtp_host",
        env: "TOLLGATE_SMTP_HOST",
        default: "",
        doc: "SMTP server for the portal's e-mails (verification, password reset). Unset: each message is written as a `.eml` file to `outbox/` in the data dir and logged.",
    },
    SettingSpec {
        key: "smtp_port",
        env: "TOLLGATE_SMTP_PORT",
        default: "",
        doc: "SMTP port. Unset: 587 for `starttls`, 465 for `tls`, 25 for `none`.",
    },
    SettingSpec {
        key: "smtp_tls",
        env: "TOLLGATE_SMTP_TLS",
        default: "starttls",
        doc: "SMTP transport security: `starttls` (upgrade a plain connection, required), `tls` (TLS from the first byte) or `none` (plain text; only for a local relay).",
    },
    SettingSpec {
        key: "smtp_user",
        env: "TOLLGATE_SMTP_USER",
        default: "",
        doc: "SMTP user name; with `smtp_password`, Tollgate authenticates. Unset: no authentication.",
    },
    SettingSpec {
        key: "smtp_password",
        env: "TOLLGATE_SMTP_PASSWORD",
        default: "",
        doc: "SMTP password.",
    },
    SettingSpec {
        key: "smtp_from",
        env: "TOLLGATE_SMTP_FROM",
        default: "Tollgate <no-reply@localhost>",
        doc: "Sender of the portal's e-mails: an address, or `Name <address>`.",
    },
    SettingSpec {
        key: "oauth_github_client_id",
        env: "TOLLGATE_OAUTH_GITHUB_CLIENT_ID",
        default: "",
        doc: "Client id of a GitHub OAuth app; with `oauth_github_client_secret`, the portal offers \"Continue with GitHub\" (callback URL: PORTAL_URL/login/github/callback).",
    },
    SettingSpec {
        key: "oauth_github_client_secret",
        env: "TOLLGATE_OAUTH_GITHUB_CLIENT_SECRET",
        default: "",
        doc: "Client secret of the GitHub OAuth app.",
    },
    SettingSpec {
        key: "oauth_github_url",
        env: "TOLLGATE_OAUTH_GITHUB_URL",
        default: "https://github.com",
        doc: "GitHub's web address; set it for GitHub Enterprise Server (its API is then at URL/api/v3).",
    },
    SettingSpec {
        key: "oauth_google_client_id",
        env: "TOLLGATE_OAUTH_GOOGLE_CLIENT_ID",
        default: "",
        doc: "Client id of a Google OAuth client; with `oauth_google_client_secret`, the portal offers \"Continue with Google\" (callback URL: PORTAL_URL/login/google/callback).",
    },
    SettingSpec {
        key: "oauth_google_client_secret",
        env: "TOLLGATE_OAUTH_GOOGLE_CLIENT_SECRET",
        default: "",
        doc: "Client secret of the Google OAuth client.",
    },
    SettingSpec {
        key: "oidc_issuer_url",
        env: "TOLLGATE_OIDC_ISSUER_URL",
        default: "",
        doc: "Issuer URL of any OpenID Connect provider (its discovery document is at URL/.well-known/openid-configuration); with `oidc_client_id`, the portal offers sign-in through it (callback URL: PORTAL_URL/login/oidc/callback). Must be https, except on a loopback host.",
    },
    SettingSpec {
        key: "oidc_client_id",
        env: "TOLLGATE_OIDC_CLIENT_ID",
        default: "",
        doc: "Client id registered with the OpenID Connect provider.",
    },
    SettingSpec {
        key: "oidc_client_secret",
        env: "TOLLGATE_OIDC_CLIENT_SECRET",
        default: "",
        doc: "Client secret registered with the OpenID Connect provider. Unset: a public client (PKCE only).",
    },
    SettingSpec {
        key: "oidc_name",
        env: "TOLLGATE_OIDC_NAME",
        default: "single sign-on",
        doc: "Name of the OpenID Connect provider on the log-in button (\"Continue with NAME\").",
    },
    SettingSpec {
        key: "workers",
        env: "TOLLGATE_WORKERS",
        default: "0",
        doc: "Worker threads serving requests. 0: one per CPU core; 1: one thread runs everything (calls, usage writer, background tasks).",
    },
    SettingSpec {
        key: "log",
        env: "TOLLGATE_LOG",
        default: "info",
        doc: "Log filter, in `tracing` env-filter syntax (e.g. `info,tollgate_gateway=debug`).",
    },
];

/// Typed, validated settings.
#[derive(Clone)]
pub struct Settings {
    /// Directory for embedded stores and demo state.
    pub data_dir: PathBuf,
    /// Control-plane database URL (`sqlite://…` or `postgres://…`), resolved.
    pub database_url: String,
    /// ClickHouse endpoint; `None` means the embedded usage store.
    pub clickhouse_url: Option<String>,
    /// ClickHouse database name.
    pub clickhouse_database: String,
    /// ClickHouse user.
    pub clickhouse_user: Option<String>,
    /// ClickHouse password.
    pub clickhouse_password: Option<String>,
    /// Row-type validation in the ClickHouse client.
    pub clickhouse_validation: bool,
    /// Gateway listener.
    pub gateway_addr: SocketAddr,
    /// Portal listener.
    pub portal_addr: SocketAddr,
    /// Admin API listener.
    pub admin_addr: SocketAddr,
    /// Admin API bearer token.
    pub admin_token: Option<String>,
    /// Gateway URL shown to developers.
    pub public_gateway_url: Option<String>,
    /// Upstream response-header timeout.
    pub upstream_timeout: Duration,
    /// Longest silence while an upstream body streams.
    pub upstream_read_timeout: Duration,
    /// Extra CA certificates for https upstreams (PEM file).
    pub upstream_ca_file: Option<PathBuf>,
    /// Longest whole upstream exchange, if limited.
    pub upstream_total_timeout: Option<Duration>,
    /// Upstream connect timeout.
    pub upstream_connect_timeout: Duration,
    /// Longest wait for a client's next call on an open connection.
    pub client_timeout: Duration,
    /// Configuration poll interval.
    pub config_poll_interval: Duration,
    /// Usage writer flush interval.
    pub usage_flush_interval: Duration,
    /// Usage writer batch size.
    pub usage_batch_size: usize,
    /// Usage queue capacity.
    pub usage_queue_capacity: usize,
    /// How often the usage spool is appended to and synced.
    pub usage_spool_sync_interval: Duration,
    /// Most bytes the usage spool holds.
    pub usage_spool_max_bytes: u64,
    /// Days raw usage events are kept.
    pub usage_retention_days: u32,
    /// Days usage rollups are kept.
    pub usage_rollup_retention_days: u32,
    /// Node name in usage events.
    pub node_name: String,
    /// Redis URL for cluster-wide rate limits.
    pub redis_url: Option<String>,
    /// Timeout of one Redis rate-limit decision.
    pub redis_timeout: Duration,
    /// Refuse calls (true) or fall back to local limits (false) when Redis fails.
    pub rate_limit_fail_closed: bool,
    /// Secret signing `/oauth/token` access tokens; `None` turns the endpoint off.
    pub token_secret: Option<String>,
    /// Lifetime of issued access tokens.
    pub token_ttl: Duration,
    /// One JSON line per answered call on standard output.
    pub access_log: bool,
    /// Calls leased at once from a quota counter.
    pub quota_lease_size: u32,
    /// Where the shared quota counters live.
    pub quota_counter: QuotaCounterKind,
    /// Worker threads; `None` means one per CPU core.
    pub workers: Option<usize>,
    /// The portal's URL as browsers reach it; `None` derives it from the listener.
    pub portal_public_url: Option<String>,
    /// Name shown in the portal and its e-mails.
    pub portal_name: String,
    /// Image shown in the portal's header.
    pub portal_logo_file: Option<PathBuf>,
    /// The portal's main colour, `#rrggbb`.
    pub portal_brand_color: Option<String>,
    /// Header holding the client address set by a trusted proxy.
    pub portal_client_ip_header: Option<String>,
    /// The SMTP server; `None` writes mail to the outbox folder.
    pub smtp: Option<SmtpSettings>,
    /// Sender of the portal's e-mails.
    pub smtp_from: String,
    /// Sign-in providers offered on the portal's log-in page, in button order.
    pub sign_in_providers: Vec<SignInProvider>,
    /// Log filter.
    pub log: String,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secrets stay out of logs.
        f.debug_struct("Settings")
            .field("data_dir", &self.data_dir)
            .field("database_url", &redact_url(&self.database_url))
            .field("clickhouse_url", &self.clickhouse_url)
            .field("gateway_addr", &self.gateway_addr)
            .field("portal_addr", &self.portal_addr)
            .field("admin_addr", &self.admin_addr)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// How the portal reaches its SMTP server.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpSettings {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Transport security.
    pub tls: SmtpTls,
    /// User name and password, when the server wants them.
    pub credentials: Option<(String, String)>,
}

impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("user", &self.credentials.as_ref().map(|c| &c.0))
            .finish_non_exhaustive()
    }
}

/// SMTP transport security.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which must succeed.
    StartTls,
    /// TLS from the first byte (SMTPS).
    Tls,
    /// No encryption: only for a relay on the same host or network.
    None,
}

impl SmtpTls {
    /// The usual port for this mode.
    pub fn default_port(self) -> u16 {
        match self {
            Self::StartTls => 587,
            Self::Tls => 465,
            Self::None => 25,
        }
    }
}

/// Where gateways share quota counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QuotaCounterKind {
    /// The control-plane database (`quota_counters`).
    #[default]
    Database,
    /// Redis at `redis_url`.
    Redis,
}

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Default,
    File(PathBuf),
    Env,
}

/// A setting that could not be read; its `Display` is the one line shown to the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    message: String,
}

impl ConfigError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// Raw values by file key, each with its source.
struct Layers {
    values: BTreeMap<&'static str, (String, Source)>,
}

impl Layers {
    fn spec(key: &str) -> &'static SettingSpec {
        SETTINGS
            .iter()
            .find(|s| s.key == key)
            .expect("every key read is declared in SETTINGS")
    }

    /// The name of a setting as the operator wrote it.
    fn name(&self, key: &str) -> String {
        let spec = Self::spec(key);
        match &self.values.get(key).map(|v| &v.1) {
            Some(Source::Env) => spec.env.to_owned(),
            Some(Source::File(p)) => format!("{key} (in {})", p.display()),
            _ => key.to_owned(),
        }
    }

    fn raw(&self, key: &str) -> Option<&str> {
        self.values
            .get(key)
            .map(|(v, _)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn invalid(&self, key: &str, value: &str, what: &str) -> ConfigError {
        ConfigError::new(format!(
            "invalid setting {}: {value:?} {what}",
            self.name(key)
        ))
    }

    fn string(&self, key: &str) -> Option<String> {
        self.raw(key).map(str::to_owned)
    }

    fn addr(&self, key: &str) -> Result<SocketAddr, ConfigError> {
        let v = self.raw(key).unwrap_or(Self::spec(key).default);
        v.parse().map_err(|_| {
            self.invalid(
                key,
                v,
                "is not a socket address; expected IP:PORT such as 0.0.0.0:8000",
            )
        })
    }

    fn millis(&self, key: &str) -> Result<Duration, ConfigError> {
        let v = self.raw(key).unwrap_or(Self::spec(key).default);
        match v.parse::<u64>() {
            Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
            _ => Err(self.invalid(
                key,
                v,
                "is not a duration; expected a whole number of milliseconds above 0",
            )),
        }
    }

    fn count(&self, key: &str) -> Result<usize, ConfigError> {
        let v = self.raw(key).unwrap_or(Self::spec(key).default);
        match v.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(self.invalid(key, v, "is not a count; expected a whole number above 0")),
        }
    }

    fn days(&self, key: &str) -> Result<u32, ConfigError> {
        let v = self.raw(key).unwrap_or(Self::spec(key).default);
        match v.parse::<u32>() {
            Ok(n @ 1..=36_500) => Ok(n),
            _ => Err(self.invalid(
                key,
                v,
                "is not a number of days; expected a whole number from 1 to 36500",
            )),
        }
    }

    fn flag(&self, key: &str) -> Result<bool, ConfigError> {
        let v = self.raw(key).unwrap_or(Self::spec(key).default);
        match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(self.invalid(key, v, "is not a boolean; expected true or false")),
        }
    }
}

impl Settings {
    /// Reads settings: defaults, then the file (the given path, or `./tollgate.toml`
    /// when present), then the process environment.
    pub fn load(config_path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(config_path, std::env::vars())
    }

    /// Like [`Settings::load`] with an explicit environment (tests pass their own).
    pub fn load_from(
        config_path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut layers = Layers {
            values: SETTINGS
                .iter()
                .map(|s| (s.key, (s.default.to_owned(), Source::Default)))
                .collect(),
        };

        let file = match config_path {
            Some(p) => Some(p.to_path_buf()),
            None => Some(PathBuf::from("tollgate.toml")).filter(|p| p.is_file()),
        };
        if let Some(path) = file {
            read_file(&path, &mut layers)?;
        }

        let env: BTreeMap<String, String> = env.into_iter().collect();
        for spec in SETTINGS {
            let value = env.get(spec.env).or_else(|| {
                // DATABASE_URL and CLICKHOUSE_URL are also accepted with the prefix.
                if spec.env.starts_with("TOLLGATE_") {
                    None
                } else {
                    env.get(&format!("TOLLGATE_{}", spec.env))
                }
            });
            if let Some(v) = value {
                layers.values.insert(spec.key, (v.clone(), Source::Env));
            }
        }

        Self::from_layers(&layers)
    }

    fn from_layers(l: &Layers) -> Result<Self, ConfigError> {
        let data_dir = PathBuf::from(l.raw("data_dir").unwrap_or("./data"));

        let database_url = match l.string("database_url") {
            None => format!("sqlite://{}", data_dir.join("tollgate.db").display()),
            Some(url)
                if url.starts_with("postgres://")
                    || url.starts_with("postgresql://")
                    || url.starts_with("sqlite:") =>
            {
                url
            }
            Some(url) => {
                return Err(l.invalid(
                    "database_url",
                    &url,
                    "is not a supported database URL; expected sqlite://PATH or postgres://USER@HOST/DB",
                ));
            }
        };

        let clickhouse_url = match l.string("clickhouse_url") {
            None => None,
            Some(u) => match url::Url::parse(&u) {
                Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => {
                    Some(u.trim_end_matches('/').to_owned())
                }
                _ => {
                    return Err(l.invalid(
                        "clickhouse_url",
                        &u,
                        "is not an HTTP URL; expected http://HOST:8123",
                    ));
                }
            },
        };

        let clickhouse_database = l
            .string("clickhouse_database")
            .unwrap_or_else(|| "tollgate".to_owned());
        if !is_identifier(&clickhouse_database) {
            return Err(l.invalid(
                "clickhouse_database",
                &clickhouse_database,
                "is not a database name; use letters, digits and underscores, starting with a letter",
            ));
        }

        let admin_token = l.string("admin_token");
        if let Some(t) = &admin_token
            && (t.len() < 16 || t.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(ConfigError::new(format!(
                "invalid setting {}: the token must be at least 16 characters without spaces (generate one with `openssl rand -hex 24`)",
                l.name("admin_token")
            )));
        }

        let public_gateway_url = match l.string("public_gateway_url") {
            None => None,
            Some(u) => match url::Url::parse(&u) {
                Ok(p) if matches!(p.scheme(), "http" | "https") => {
                    Some(u.trim_end_matches('/').to_owned())
                }
                _ => {
                    return Err(l.invalid("public_gateway_url", &u, "is not an http(s) URL"));
                }
            },
        };

        let log = l.string("log").unwrap_or_else(|| "info".to_owned());
        let node_name = l.string("node_name").unwrap_or_else(default_node_name);

        Ok(Self {
            data_dir,
            database_url,
            clickhouse_url,
            clickhouse_database,
            clickhouse_user: l.string("clickhouse_user"),
            clickhouse_password: l.string("clickhouse_password"),
            clickhouse_validation: l.flag("clickhouse_validation")?,
            gateway_addr: l.addr("gateway_addr")?,
            portal_addr: l.addr("portal_addr")?,
            admin_addr: l.addr("admin_addr")?,
            admin_token,
            public_gateway_url,
            upstream_timeout: l.millis("upstream_timeout_ms")?,
            upstream_read_timeout: l.millis("upstream_read_timeout_ms")?,
            upstream_ca_file: match l.raw("upstream_ca_file").filter(|p| !p.is_empty()) {
                None => None,
                Some(path) => match std::fs::read_to_string(path) {
                    Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => {
                        Some(PathBuf::from(path))
                    }
                    Ok(_) => {
                        return Err(l.invalid(
                            "upstream_ca_file",
                            path,
                            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                        ));
                    }
                    Err(e) => {
                        return Err(l.invalid(
                            "upstream_ca_file",
                            path,
                            &format!("cannot be read: {e}"),
                        ));
                    }
                },
            },
            upstream_total_timeout: match l.raw("upstream_total_timeout_ms") {
                None | Some("") => None,
                Some(_) => Some(l.millis("upstream_total_timeout_ms")?),
            },
            upstream_connect_timeout: l.millis("upstream_connect_timeout_ms")?,
            client_timeout: l.millis("client_timeout_ms")?,
            config_poll_interval: l.millis("config_poll_interval_ms")?,
            usage_flush_interval: l.millis("usage_flush_interval_ms")?,
            usage_batch_size: l.count("usage_batch_size")?,
            usage_queue_capacity: l.count("usage_queue_capacity")?,
            usage_spool_sync_interval: l.millis("usage_spool_sync_interval_ms")?,
            usage_spool_max_bytes: l.count("usage_spool_max_bytes")? as u64,
            usage_retention_days: l.days("usage_retention_days")?,
            usage_rollup_retention_days: l.days("usage_rollup_retention_days")?,
            node_name,
            redis_url: match l.string("redis_url") {
                None => None,
                Some(u) if u.starts_with("redis://") || u.starts_with("rediss://") => Some(u),
                Some(u) => {
                    return Err(l.invalid(
                        "redis_url",
                        &u,
                        "is not a Redis URL; expected redis://HOST:6379",
                    ));
                }
            },
            redis_timeout: l.millis("redis_timeout_ms")?,
            rate_limit_fail_closed: match l.raw("rate_limit_failure_mode").unwrap_or("open") {
                "open" => false,
                "closed" => true,
                other => {
                    return Err(l.invalid(
                        "rate_limit_failure_mode",
                        other,
                        "is not a failure mode; expected open or closed",
                    ));
                }
            },
            token_secret: match l.string("token_secret") {
                Some(s) if s.len() < 32 => {
                    return Err(ConfigError::new(format!(
                        "invalid setting {}: the secret must be at least 32 characters (generate one with `openssl rand -hex 32`)",
                        l.name("token_secret")
                    )));
                }
                other => other,
            },
            token_ttl: match l.raw("token_ttl_secs").unwrap_or("3600").parse::<u64>() {
                Ok(s) if (60..=86_400).contains(&s) => Duration::from_secs(s),
                _ => {
                    let v = l.raw("token_ttl_secs").unwrap_or_default().to_owned();
                    return Err(l.invalid(
                        "token_ttl_secs",
                        &v,
                        "is not a lifetime; expected 60 to 86400 seconds",
                    ));
                }
            },
            access_log: match l.raw("access_log").unwrap_or("off") {
                "off" => false,
                "json" => true,
                other => {
                    return Err(l.invalid(
                        "access_log",
                        other,
                        "is not an access log format; expected json or off",
                    ));
                }
            },
            quota_lease_size: u32::try_from(l.count("quota_lease_size")?).unwrap_or(u32::MAX),
            quota_counter: quota_counter(l)?,
            workers: match l.raw("workers").unwrap_or("0") {
                "0" => None,
                _ => Some(l.count("workers")?),
            },
            portal_public_url: match l.string("portal_public_url") {
                None => None,
                Some(u) => match url::Url::parse(&u) {
                    Ok(p) if matches!(p.scheme(), "http" | "https") && p.has_host() => {
                        Some(u.trim_end_matches('/').to_owned())
                    }
                    _ => {
                        return Err(l.invalid(
                            "portal_public_url",
                            &u,
                            "is not an http(s) URL; expected e.g. https://developers.example.com",
                        ));
                    }
                },
            },
            portal_name: match l.string("portal_name") {
                Some(n) if n.trim().is_empty() || n.chars().count() > 60 => {
                    return Err(l.invalid("portal_name", &n, "must be 1 to 60 characters"));
                }
                Some(n) => n.trim().to_owned(),
                None => "Tollgate".to_owned(),
            },
            portal_logo_file: l.string("portal_logo_file").map(PathBuf::from),
            portal_brand_color: match l.string("portal_brand_color") {
                None => None,
                Some(c) => Some(
                    brand_color(&c).map_err(|what| l.invalid("portal_brand_color", &c, what))?,
                ),
            },
            portal_client_ip_header: match l.string("portal_client_ip_header") {
                Some(h) if http_token(&h) => Some(h.to_ascii_lowercase()),
                Some(h) => {
                    return Err(l.invalid(
                        "portal_client_ip_header",
                        &h,
                        "is not a header name; expected e.g. X-Forwarded-For",
                    ));
                }
                None => None,
            },
            smtp: smtp(l)?,
            sign_in_providers: sign_in_providers(l)?,
            smtp_from: match l
                .raw("smtp_from")
                .unwrap_or(Layers::spec("smtp_from").default)
            {
                from if mailbox_address(from).is_some() => from.trim().to_owned(),
                from => {
                    return Err(l.invalid(
                        "smtp_from",
                        from,
                        "is not a sender; expected an address or `Name <address>`",
                    ));
                }
            },
            log,
        })
    }

    /// Settings for tests and embedding: defaults with the data dir given and all
    /// listeners on loopback port 0.
    pub fn for_data_dir(data_dir: &Path) -> Self {
        let mut s = Self::load_from(None, []).expect("embedded defaults are valid");
        s.data_dir = data_dir.to_path_buf();
        s.database_url = format!("sqlite://{}", data_dir.join("tollgate.db").display());
        let any: SocketAddr = "127.0.0.1:0".parse().expect("loopback address");
        s.gateway_addr = any;
        s.portal_addr = any;
        s.admin_addr = any;
        s
    }

    /// True when the control plane is on PostgreSQL.
    pub fn uses_postgres(&self) -> bool {
        self.database_url.starts_with("postgres")
    }

    /// The portal URL browsers use (for links in e-mails).
    pub fn portal_url(&self, bound: SocketAddr) -> String {
        self.portal_public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", display_addr(bound)))
    }

    /// The gateway URL to show to developers.
    pub fn gateway_url(&self, bound: SocketAddr) -> String {
        self.public_gateway_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", display_addr(bound)))
    }
}

/// An address as a client would dial it: `0.0.0.0` becomes `127.0.0.1`.
pub fn display_addr(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    }
}

fn smtp(l: &Layers) -> Result<Option<SmtpSettings>, ConfigError> {
    let tls = match l.raw("smtp_tls").unwrap_or("starttls") {
        "starttls" => SmtpTls::StartTls,
        "tls" => SmtpTls::Tls,
        "none" => SmtpTls::None,
        other => {
            return Err(l.invalid(
                "smtp_tls",
                other,
                "is not an SMTP security mode; expected starttls, tls or none",
            ));
        }
    };
    let port = match l.raw("smtp_port") {
        None => tls.default_port(),
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(l.invalid("smtp_port", p, "is not a port; expected 1 to 65535")),
        },
    };
    let Some(host) = l.string("smtp_host") else {
        return Ok(None);
    };
    if host.contains(['/', ' ', ':']) && host.parse::<std::net::Ipv6Addr>().is_err() {
        return Err(l.invalid(
            "smtp_host",
            &host,
            "is not a host name; expected e.g. smtp.example.com (the port goes in smtp_port)",
        ));
    }
    let credentials = match (l.string("smtp_user"), l.string("smtp_password")) {
        (Some(u), Some(p)) => Some((u, p)),
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConfigError::new(format!(
                "invalid setting {}: a user needs a password; set {} too",
                l.name("smtp_user"),
                Layers::spec("smtp_password").env
            )));
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(format!(
                "invalid setting {}: a password needs a user; set {} too",
                l.name("smtp_password"),
                Layers::spec("smtp_user").env
            )));
        }
    };
    Ok(Some(SmtpSettings {
        host,
        port,
        tls,
        credentials,
    }))
}

/// An outside identity provider developers may sign in with.
#[derive(Clone, PartialEq, Eq)]
pub struct SignInProvider {
    /// Stable id, used in URLs and stored with linked identities.
    pub id: &'static str,
    /// Name on the button ("Continue with NAME").
    pub name: String,
    /// How to talk to it.
    pub kind: SignInKind,
    /// OAuth client id.
    pub client_id: String,
    /// OAuth client secret; `None` for a public client.
    pub client_secret: Option<String>,
}

impl fmt::Debug for SignInProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignInProvider")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// The protocol a sign-in provider speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignInKind {
    /// GitHub's OAuth apps: the address comes from its REST API.
    GitHub {
        /// Web address (authorization and token endpoints).
        web_url: String,
        /// REST API address.
        api_url: String,
    },
    /// OpenID Connect with discovery from the issuer URL.
    Oidc {
        /// The issuer, without a trailing slash.
        issuer: String,
    },
}

fn sign_in_providers(l: &Layers) -> Result<Vec<SignInProvider>, ConfigError> {
    let mut providers = Vec::new();
    let pair =
        |id: &str, secret_needed: bool| -> Result<Option<(String, Option<String>)>, ConfigError> {
            let id_key = format!("{id}_client_id");
            let secret_key = format!("{id}_client_secret");
            match (l.string(&id_key), l.string(&secret_key)) {
                (None, None) => Ok(None),
                (Some(c), Some(s)) => Ok(Some((c, Some(s)))),
                (Some(c), None) if !secret_needed => Ok(Some((c, None))),
                (Some(_), None) => Err(ConfigError::new(format!(
                    "invalid setting {}: a client id needs its secret; set {} too",
                    l.name(&id_key),
                    Layers::spec(&secret_key).env
                ))),
                (None, Some(_)) => Err(ConfigError::new(format!(
                    "invalid setting {}: a client secret needs its client id; set {} too",
                    l.name(&secret_key),
                    Layers::spec(&id_key).env
                ))),
            }
        };
    if let Some((client_id, client_secret)) = pair("oauth_github", true)? {
        let web = l
            .string("oauth_github_url")
            .unwrap_or_else(|| "https://github.com".to_owned());
        let web_url = provider_url(l, "oauth_github_url", &web)?;
        let api_url = if web_url == "https://github.com" {
            "https://api.github.com".to_owned()
        } else {
            format!("{web_url}/api/v3")
        };
        providers.push(SignInProvider {
            id: "github",
            name: "GitHub".to_owned(),
            kind: SignInKind::GitHub { web_url, api_url },
            client_id,
            client_secret,
        });
    }
    if let Some((client_id, client_secret)) = pair("oauth_google", true)? {
        providers.push(SignInProvider {
            id: "google",
            name: "Google".to_owned(),
            kind: SignInKind::Oidc {
                issuer: "https://accounts.google.com".to_owned(),
            },
            client_id,
            client_secret,
        });
    }
    match (l.string("oidc_issuer_url"), pair("oidc", false)?) {
        (None, None) => {}
        (Some(issuer), Some((client_id, client_secret))) => {
            let issuer = provider_url(l, "oidc_issuer_url", &issuer)?;
            let name = l
                .string("oidc_name")
                .unwrap_or_else(|| "single sign-on".to_owned());
            if name.chars().count() > 40 || name.chars().any(char::is_control) {
                return Err(l.invalid("oidc_name", &name, "must be 1 to 40 characters"));
            }
            providers.push(SignInProvider {
                id: "oidc",
                name,
                kind: SignInKind::Oidc { issuer },
                client_id,
                client_secret,
            });
        }
        (Some(_), None) => {
            return Err(ConfigError::new(format!(
                "invalid setting {}: an issuer needs a client id; set {} too",
                l.name("oidc_issuer_url"),
                Layers::spec("oidc_client_id").env
            )));
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(format!(
                "invalid setting {}: a client id needs the provider's issuer URL; set {} too",
                l.name("oidc_client_id"),
                Layers::spec("oidc_issuer_url").env
            )));
        }
    }
    Ok(providers)
}

/// A provider's URL: https, or http on a loopback host (local testing).
fn provider_url(l: &Layers, key: &str, value: &str) -> Result<String, ConfigError> {
    let Ok(u) = url::Url::parse(value) else {
        return Err(l.invalid(key, value, "is not a URL; expected https://HOST"));
    };
    let loopback = match u.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    };
    match u.scheme() {
        "https" if u.has_host() => {}
        "http" if loopback => {}
        "http" => {
            return Err(l.invalid(
                key,
                value,
                "must be https (sign-in secrets cross this connection); plain http is only allowed on a loopback host",
            ));
        }
        _ => return Err(l.invalid(key, value, "is not an https URL")),
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(l.invalid(key, value, "must not have a query or a fragment"));
    }
    Ok(value.trim_end_matches('/').to_owned())
}

/// A `#RRGGBB` colour readable on white (WCAG contrast at least 4.5:1),
/// lower-cased.
pub fn brand_color(c: &str) -> Result<String, &'static str> {
    let hex = c
        .strip_prefix('#')
        .filter(|h| h.len() == 6 && h.chars().all(|ch| ch.is_ascii_hexdigit()))
        .ok_or("is not a colour; expected #RRGGBB, e.g. #1d4ed8")?;
    let channel = |i: usize| {
        let v = f64::from(u8::from_str_radix(&hex[i..i + 2], 16).unwrap_or(0)) / 255.0;
        if v <= 0.040_45 {
            v / 12.92
        } else {
            ((v + 0.055) / 1.055).powf(2.4)
        }
    };
    let luminance = 0.2126 * channel(0) + 0.7152 * channel(2) + 0.0722 * channel(4);
    if 1.05 / (luminance + 0.05) < 4.5 {
        return Err(
            "is too light: text in it on white must reach 4.5:1 contrast (WCAG AA); choose a darker shade",
        );
    }
    Ok(format!("#{}", hex.to_ascii_lowercase()))
}

/// The address inside `addr` or `Name <addr>`, when it looks like one.
pub fn mailbox_address(s: &str) -> Option<&str> {
    let s = s.trim();
    let addr = match s.rsplit_once('<') {
        Some((_, rest)) => rest.strip_suffix('>')?,
        None => s,
    };
    let (local, domain) = addr.split_once('@')?;
    (!local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && !addr.chars().any(|c| c.is_whitespace() || c.is_control()))
    .then_some(addr)
}

/// True for an HTTP header name (an RFC 9110 token).
fn http_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn quota_counter(l: &Layers) -> Result<QuotaCounterKind, ConfigError> {
    match l.raw("quota_counter").unwrap_or("database") {
        "database" => Ok(QuotaCounterKind::Database),
        "redis" if l.raw("redis_url").is_some() => Ok(QuotaCounterKind::Redis),
        "redis" => Err(ConfigError::new(format!(
            "invalid setting {}: \"redis\" needs a Redis; set {} (redis_url in tollgate.toml), or use \"database\"",
            l.name("quota_counter"),
            Layers::spec("redis_url").env,
        ))),
        other => Err(l.invalid(
            "quota_counter",
            other,
            "is not a quota counter; expected database or redis",
        )),
    }
}

fn default_node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "tollgate".to_owned())
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 64
}

fn read_file(path: &Path, layers: &mut Layers) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(format!(
            "cannot read configuration file {}: {e}",
            path.display()
        ))
    })?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let msg = e.message().to_owned();
        ConfigError::new(format!(
            "configuration file {} is not valid TOML: {msg}",
            path.display()
        ))
    })?;
    for (key, value) in table {
        let Some(spec) = SETTINGS.iter().find(|s| s.key == key) else {
            return Err(ConfigError::new(format!(
                "unknown setting {key:?} in {}; see docs/configuration.md for the list",
                path.display()
            )));
        };
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Float(f) => f.to_string(),
            other => {
                return Err(ConfigError::new(format!(
                    "invalid setting {key} (in {}): expected a string, number or boolean, got {}",
                    path.display(),
                    other.type_str()
                )));
            }
        };
        layers
            .values
            .insert(spec.key, (text, Source::File(path.to_path_buf())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_are_documented_values() {
        let s = Settings::load_from(None, []).unwrap();
        assert_eq!(s.gateway_addr.to_string(), "0.0.0.0:8000");
        assert_eq!(s.portal_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(s.admin_addr.to_string(), "127.0.0.1:8001");
        assert_eq!(s.data_dir, PathBuf::from("./data"));
        assert_eq!(s.database_url, "sqlite://./data/tollgate.db");
        assert!(s.clickhouse_url.is_none());
        assert!(s.admin_token.is_none());
        assert_eq!(s.usage_flush_interval, Duration::from_secs(1));
    }

    #[test]
    fn file_then_env_override() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(
            &path,
            "gateway_addr = \"127.0.0.1:9000\"\nupstream_timeout_ms = 250\ndata_dir = \"/srv/tg\"\n",
        )
        .unwrap();
        let s = Settings::load_from(
            Some(&path),
            env(&[("TOLLGATE_GATEWAY_ADDR", "127.0.0.1:9100")]),
        )
        .unwrap();
        assert_eq!(s.gateway_addr.to_string(), "127.0.0.1:9100");
        assert_eq!(s.upstream_timeout, Duration::from_millis(250));
        assert_eq!(s.database_url, "sqlite:///srv/tg/tollgate.db");
    }

    #[test]
    fn brand_colours_must_be_readable() {
        assert_eq!(brand_color("#1D4ED8").unwrap(), "#1d4ed8");
        assert_eq!(brand_color("#000000").unwrap(), "#000000");
        assert!(brand_color("#ffff00").unwrap_err().contains("too light"));
        assert!(
            brand_color("#777777").unwrap_err().contains("too light"),
            "4.48:1"
        );
        assert!(brand_color("#767676").is_ok(), "4.54:1");
        for bad in ["1d4ed8", "#1d4ed", "#1d4ed8ff", "#gggggg", "blue"] {
            assert!(brand_color(bad).unwrap_err().contains("#RRGGBB"), "{bad}");
        }
        let err = Settings::load_from(None, env(&[("TOLLGATE_PORTAL_BRAND_COLOR", "#fff")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("TOLLGATE_PORTAL_BRAND_COLOR"), "{err}");
    }

    #[test]
    fn sign_in_providers_are_read_and_checked() {
        let s = Settings::load_from(
            None,
            env(&[
                ("TOLLGATE_OAUTH_GITHUB_CLIENT_ID", "gh-id"),
                ("TOLLGATE_OAUTH_GITHUB_CLIENT_SECRET", "gh-secret"),
                (
                    "TOLLGATE_OIDC_ISSUER_URL",
                    "https://login.example.com/realms/dev/",
                ),
                ("TOLLGATE_OIDC_CLIENT_ID", "portal"),
                ("TOLLGATE_OIDC_NAME", "Example SSO"),
            ]),
        )
        .unwrap();
        let ids: Vec<_> = s.sign_in_providers.iter().map(|p| p.id).collect();
        assert_eq!(ids, ["github", "oidc"]);
        assert_eq!(
            s.sign_in_providers[0].kind,
            SignInKind::GitHub {
                web_url: "https://github.com".to_owned(),
                api_url: "https://api.github.com".to_owned(),
            }
        );
        assert_eq!(
            s.sign_in_providers[1].kind,
            SignInKind::Oidc {
                issuer: "https://login.example.com/realms/dev".to_owned()
            }
        );
        assert_eq!(
            s.sign_in_providers[1].client_secret, None,
            "a public client"
        );
        assert!(!format!("{:?}", s.sign_in_providers[0]).contains("gh-secret"));

        let ghe = Settings::load_from(
            None,
            env(&[
                ("TOLLGATE_OAUTH_GITHUB_CLIENT_ID", "id"),
                ("TOLLGATE_OAUTH_GITHUB_CLIENT_SECRET", "secret"),
                ("TOLLGATE_OAUTH_GITHUB_URL", "https://git.corp.example/"),
            ]),
        )
        .unwrap();
        assert!(matches!(
            &ghe.sign_in_providers[0].kind,
            SignInKind::GitHub { api_url, .. } if api_url == "https://git.corp.example/api/v3"
        ));

        for (vars, needle) in [
            (
                &[("TOLLGATE_OAUTH_GOOGLE_CLIENT_ID", "id")][..],
                "TOLLGATE_OAUTH_GOOGLE_CLIENT_SECRET",
            ),
            (
                &[("TOLLGATE_OIDC_ISSUER_URL", "https://idp.example.com")][..],
                "TOLLGATE_OIDC_CLIENT_ID",
            ),
            (
                &[("TOLLGATE_OIDC_CLIENT_ID", "x")][..],
                "TOLLGATE_OIDC_ISSUER_URL",
            ),
            (
                &[
                    ("TOLLGATE_OIDC_ISSUER_URL", "http://idp.example.com"),
                    ("TOLLGATE_OIDC_CLIENT_ID", "x"),
                ][..],
                "must be https",
            ),
        ] {
            let err = Settings::load_from(None, env(vars))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{vars:?}: {err}");
        }
        // Plain http is fine on a loopback host (a local test provider).
        let local = Settings::load_from(
            None,
            env(&[
                ("TOLLGATE_OIDC_ISSUER_URL", "http://127.0.0.1:9000"),
                ("TOLLGATE_OIDC_CLIENT_ID", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(local.sign_in_providers.len(), 1);
    }

    #[test]
    fn invalid_values_name_the_setting() {
        let err = Settings::load_from(None, env(&[("TOLLGATE_GATEWAY_ADDR", "nonsense")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("invalid setting TOLLGATE_GATEWAY_ADDR:"),
            "{err}"
        );
        assert!(!err.contains('\n'));

        let err = Settings::load_from(None, env(&[("DATABASE_URL", "mysql://x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("DATABASE_URL"), "{err}");

        let err = Settings::load_from(None, env(&[("TOLLGATE_ADMIN_TOKEN", "short")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("TOLLGATE_ADMIN_TOKEN") && err.contains("16"),
            "{err}"
        );

        let err = Settings::load_from(None, env(&[("TOLLGATE_USAGE_BATCH_SIZE", "0")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("TOLLGATE_USAGE_BATCH_SIZE"), "{err}");
    }

    #[test]
    fn a_redis_quota_counter_needs_a_redis_url() {
        let s = Settings::load_from(None, []).unwrap();
        assert_eq!(s.quota_counter, QuotaCounterKind::Database);

        let err = Settings::load_from(None, env(&[("TOLLGATE_QUOTA_COUNTER", "redis")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("invalid setting TOLLGATE_QUOTA_COUNTER:")
                && err.contains("TOLLGATE_REDIS_URL"),
            "{err}"
        );

        let s = Settings::load_from(
            None,
            env(&[
                ("TOLLGATE_QUOTA_COUNTER", "redis"),
                ("TOLLGATE_REDIS_URL", "redis://127.0.0.1:6379"),
            ]),
        )
        .unwrap();
        assert_eq!(s.quota_counter, QuotaCounterKind::Redis);

        let err = Settings::load_from(None, env(&[("TOLLGATE_QUOTA_COUNTER", "memcached")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("TOLLGATE_QUOTA_COUNTER") && err.contains("database or redis"),
            "{err}"
        );
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(&path, "gateway_port = 3\n").unwrap();
        let err = Settings::load_from(Some(&path), [])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown setting \"gateway_port\""), "{err}");

        std::fs::write(&path, "admin_addr = \"x\"\n").unwrap();
        let err = Settings::load_from(Some(&path), [])
            .unwrap_err()
            .to_string();
        assert!(err.contains("admin_addr (in "), "{err}");

        let missing = dir.path().join("nope.toml");
        let err = Settings::load_from(Some(&missing), [])
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read configuration file"), "{err}");
    }

    #[test]
    fn smtp_settings_are_checked() {
        let s = Settings::load_from(None, []).unwrap();
        assert!(s.smtp.is_none());
        assert_eq!(s.smtp_from, "Tollgate <no-reply@localhost>");
        assert_eq!(s.portal_name, "Tollgate");

        let s = Settings::load_from(
            None,
            env(&[
                ("TOLLGATE_SMTP_HOST", "smtp.example.com"),
                ("TOLLGATE_SMTP_TLS", "tls"),
                ("TOLLGATE_SMTP_USER", "u"),
                ("TOLLGATE_SMTP_PASSWORD", "p"),
            ]),
        )
        .unwrap();
        let smtp = s.smtp.unwrap();
        assert_eq!((smtp.port, smtp.tls), (465, SmtpTls::Tls));
        assert!(
            !format!("{smtp:?}").contains("\"p\""),
            "password stays out of logs"
        );

        for (pairs, name) in [
            (
                vec![("TOLLGATE_SMTP_HOST", "h"), ("TOLLGATE_SMTP_TLS", "ssl")],
                "TOLLGATE_SMTP_TLS",
            ),
            (
                vec![("TOLLGATE_SMTP_HOST", "h"), ("TOLLGATE_SMTP_PORT", "0")],
                "TOLLGATE_SMTP_PORT",
            ),
            (vec![("TOLLGATE_SMTP_HOST", "h:25")], "TOLLGATE_SMTP_HOST"),
            (
                vec![("TOLLGATE_SMTP_HOST", "h"), ("TOLLGATE_SMTP_USER", "u")],
                "TOLLGATE_SMTP_USER",
            ),
            (vec![("TOLLGATE_SMTP_FROM", "nobody")], "TOLLGATE_SMTP_FROM"),
            (
                vec![("TOLLGATE_PORTAL_PUBLIC_URL", "ftp://x")],
                "TOLLGATE_PORTAL_PUBLIC_URL",
            ),
            (
                vec![("TOLLGATE_PORTAL_CLIENT_IP_HEADER", "X Forwarded")],
                "TOLLGATE_PORTAL_CLIENT_IP_HEADER",
            ),
        ] {
            let err = Settings::load_from(None, env(&pairs))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(&format!("invalid setting {name}")), "{err}");
        }
    }

    #[test]
    fn docs_list_every_setting() {
        let doc = include_str!("../../docs/configuration.md");
        for s in SETTINGS {
            assert!(
                doc.contains(&format!("`{}`", s.env)),
                "docs/configuration.md lacks {}",
                s.env
            );
            assert!(
                doc.contains(&format!("`{}`", s.key)),
                "docs/configuration.md lacks {}",
                s.key
            );
        }
    }
}
