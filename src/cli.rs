//! The command line: `ferry serve` and its settings, `ferry schema`, and the kubectl-shaped
//! client commands (`apply`, `get`, `describe`, `delete`).

use clap::{Args, Parser, Subcommand};

use crate::config::{RawSettings, defaults};

#[derive(Debug, Parser)]
#[command(
    name = "ferry",
    version,
    about = "Keeps local folders converged into S3: declarative upload jobs, resumable multipart uploads, a reconcile loop.",
    long_about = None,
    after_help = "Every setting of `ferry serve` may come from its environment variable or its flag; see `ferry serve --help`.\nAWS credentials, region and endpoint come from the standard AWS chain (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION, AWS_PROFILE, AWS_ENDPOINT_URL)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API, the scanner and the uploaders until SIGTERM or SIGINT.
    Serve(Box<ServeArgs>),
    /// Print the JSON schema of UploadJob manifests (for editors and CI validation).
    Schema,
    /// Create or update the jobs declared in manifest files, like `kubectl apply`.
    Apply(ApplyArgs),
    /// List jobs, or one job's files.
    Get(GetArgs),
    /// Show one job in detail: spec, status, conditions, failing files.
    Describe(DescribeArgs),
    /// Delete a job (its objects in S3 stay).
    Delete(DeleteArgs),
    /// Confirm the prunes a job's guard holds (a batch of more than half of its objects, or
    /// more than 1,000): they are deleted from S3.
    Prune(DeleteArgs),
    /// List a job's objects in S3 now and upload again what is missing or changed.
    Resync(DeleteArgs),
}

/// How the client reaches a server. The token comes from FERRY_API_TOKEN only: a flag would
/// show it to everyone who can list processes.
#[derive(Debug, Clone, Args)]
#[command(after_help = "The API token, when the server has one, is read from FERRY_API_TOKEN.")]
pub struct ClientArgs {
    /// The ferry server's URL.
    #[arg(
        long,
        env = "FERRY_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub server: String,
    /// Output format: a table for people, json or yaml for scripts.
    #[arg(short, long, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A manifest file, or a folder of .yaml/.yml files; repeat for more.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<std::path::PathBuf>,
    /// Follow the jobs with a progress bar until they converge; exit 1 if one FAILED.
    #[arg(long)]
    pub wait: bool,
    /// Only read and validate the manifests, as ferry would; send nothing (no server needed).
    #[arg(long, conflicts_with = "wait")]
    pub dry_run: bool,
    /// How long --wait waits (e.g. 90s, 30m, 2h).
    #[arg(long, default_value = "1h")]
    pub timeout: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    #[command(subcommand)]
    pub what: GetWhat,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum GetWhat {
    /// Every job, or the one named.
    #[command(visible_aliases = ["job", "uploadjobs", "uploadjob"])]
    Jobs { name: Option<String> },
    /// The files a job tracks.
    #[command(visible_alias = "file")]
    Files {
        /// The job.
        name: String,
        /// Only files in this state: PENDING, IN_PROGRESS, UPLOADED or FAILED.
        #[arg(long)]
        state: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct DescribeArgs {
    #[command(subcommand)]
    pub what: OneJob,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[command(subcommand)]
    pub what: OneJob,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum OneJob {
    /// One job, by name.
    #[command(visible_aliases = ["uploadjob"])]
    Job { name: String },
}

/// The settings of `ferry serve`, as given; validated by [`RawSettings::validate`].
#[derive(Debug, Args)]
#[command(
    after_help = "AWS credentials, region and endpoint come from the standard AWS chain: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION, AWS_PROFILE, AWS_ENDPOINT_URL."
)]
pub struct ServeArgs {
    /// HTTP address to listen on.
    #[arg(long, env = "FERRY_LISTEN", default_value = defaults::LISTEN)]
    pub listen: String,
    /// SQLite database (sqlite://PATH or a plain path); created if missing, migrated at start.
    #[arg(long, env = "FERRY_DATABASE_URL", default_value = defaults::DATABASE_URL)]
    pub database_url: String,
    /// Multipart part size: bytes, or with KiB/MiB/GiB; at least 5MiB. Grown automatically so
    /// that no file needs more than 10,000 parts.
    #[arg(long, env = "FERRY_CHUNK_SIZE", default_value = defaults::CHUNK_SIZE)]
    pub chunk_size: String,
    /// Files uploading at once: auto grows the number while throughput rises and halves it on
    /// 503 SlowDown or timeouts (starting at 64, 4 to 256); a number from 1 to 256 pins it.
    #[arg(long, env = "FERRY_CONCURRENCY", default_value = defaults::CONCURRENCY)]
    pub concurrency: String,
    /// Upload rate cap for the whole process, in bytes per second with KiB/MiB/GiB (50MiB),
    /// shared by every upload and paced smoothly; unlimited: no cap.
    #[arg(long, env = "FERRY_MAX_BANDWIDTH", default_value = defaults::MAX_BANDWIDTH)]
    pub max_bandwidth: String,
    /// How often every job is re-scanned (2s, 30s, 5m, 1h ...).
    #[arg(long, env = "FERRY_SCAN_INTERVAL", default_value = defaults::SCAN_INTERVAL)]
    pub scan_interval: String,
    /// How often each job's objects are listed in S3 (ListObjectsV2) and compared with what
    /// ferry recorded; a missing or changed object is uploaded again (drift repair). off: never.
    #[arg(long, env = "FERRY_RESYNC_INTERVAL", default_value = defaults::RESYNC_INTERVAL)]
    pub resync_interval: String,
    /// Log filter, RUST_LOG syntax (info, ferry=debug,info ...).
    #[arg(long, env = "FERRY_LOG", default_value = defaults::LOG)]
    pub log: String,
    /// Log format: json or text.
    #[arg(long, env = "FERRY_LOG_FORMAT", default_value = defaults::LOG_FORMAT)]
    pub log_format: String,
    /// Path-style S3 addressing (LocalStack, MinIO and most S3-compatible stores want true).
    #[arg(long, env = "FERRY_S3_FORCE_PATH_STYLE", default_value = defaults::S3_FORCE_PATH_STYLE)]
    pub s3_force_path_style: String,
    /// Attempts a file gets (each with the per-request retries inside it) before it is FAILED;
    /// between attempts ferry waits 2 s, doubling, at most 5 minutes.
    #[arg(long, env = "FERRY_MAX_ATTEMPTS", default_value = defaults::MAX_ATTEMPTS)]
    pub max_attempts: String,
    /// Checksum sent with every object and part and checked after completion: auto (CRC32C,
    /// falling back to MD5 proofs alone, once, for a store that refuses checksum headers, such as
    /// Backblaze B2), or crc32c, crc32 or none to pin it (none: the MD5 ETag is the only check).
    #[arg(long, env = "FERRY_CHECKSUM", default_value = defaults::CHECKSUM)]
    pub checksum: String,
    /// How long a file must go unmodified before it is uploaded, so that files still being
    /// written are not shipped half-written (0s: at once).
    #[arg(long, env = "FERRY_SETTLE_TIME", default_value = defaults::SETTLE_TIME)]
    pub settle_time: String,
    /// A folder of UploadJob YAML manifests to reconcile (GitOps); unset: off.
    #[arg(long, env = "FERRY_MANIFESTS_DIR")]
    pub manifests_dir: Option<String>,
    /// When set, every /uploads and /manifests request needs `Authorization: Bearer <token>`
    /// (at least 16 characters). Required to listen beyond loopback.
    #[arg(long, env = "FERRY_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// ':'-separated absolute folders; when set, a job's source folder must lie inside one.
    #[arg(long, env = "FERRY_ALLOWED_ROOTS")]
    pub allowed_roots: Option<String>,
    /// Listen beyond loopback without FERRY_API_TOKEN, for a proxy in front that authenticates.
    #[arg(long, env = "FERRY_INSECURE_LISTEN", default_value = "false")]
    pub insecure_listen: String,
    /// Symbolic links in source folders: never (not uploaded, wherever they point) or inside
    /// (uploaded when the target lies inside the job's folder; links out are always skipped).
    #[arg(long, env = "FERRY_FOLLOW_SYMLINKS", default_value = defaults::FOLLOW_SYMLINKS)]
    pub follow_symlinks: String,
}

impl From<ServeArgs> for RawSettings {
    fn from(a: ServeArgs) -> Self {
        RawSettings {
            listen: a.listen,
            database_url: a.database_url,
            chunk_size: a.chunk_size,
            concurrency: a.concurrency,
            max_bandwidth: a.max_bandwidth,
            scan_interval: a.scan_interval,
            resync_interval: a.resync_interval,
            log: a.log,
            log_format: a.log_format,
            s3_force_path_style: a.s3_force_path_style,
            max_attempts: a.max_attempts,
            checksum: a.checksum,
            settle_time: a.settle_time,
            manifests_dir: a.manifests_dir,
            api_token: a.api_token,
            allowed_roots: a.allowed_roots,
            insecure_listen: a.insecure_listen,
            follow_symlinks: a.follow_symlinks,
        }
    }
}
