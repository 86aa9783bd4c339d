//! The gateway without a database server (DB-less mode): configuration from a
//! YAML file, hot-reloaded when the file changes.
//!
//! The file is applied (with pruning) to a private SQLite database in the data
//! dir, `gateway-config.db`, and the gateway serves from that database exactly as
//! it would from a shared one: the snapshot, the change watch and the quota
//! counters all work unchanged, and counters survive restarts. The file is
//! checked every second; a change is read, validated and applied in one
//! transaction, so the gateway sees either the old or the new file, never half
//! of one. An invalid file is reported with every problem's place and the last
//! good configuration keeps serving.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tollgate_core::Store;
use tollgate_core::declarative::{Document, Problems};
use tollgate_core::store::{ApplyError, ApplyOptions};

/// How often the file is checked for changes.
pub const POLL: Duration = Duration::from_secs(1);

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid configuration.
    #[error("{path} is not a valid Tollgate configuration:\n{}", indent(problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem, with its place in the file.
        problems: Problems,
        /// SHA-256 of the file's bytes, so a problem is reported once per version.
        digest: [u8; 32],
    },
}

fn indent(problems: &Problems) -> String {
    problems
        .0
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A configuration file as read: the document and the digest of its text.
#[derive(Debug)]
pub struct Loaded {
    /// The validated document.
    pub document: Document,
    /// SHA-256 of the file's bytes: tells a real change from a touch.
    pub digest: [u8; 32],
}

/// Reads and validates a configuration file.
pub fn read(path: &Path) -> Result<Loaded, FileError> {
    let bytes = std::fs::read(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let digest = Sha256::digest(&bytes).into();
    let invalid = |problems| FileError::Invalid {
        path: path.to_owned(),
        problems,
        digest,
    };
    let text = String::from_utf8(bytes).map_err(|_| {
        invalid(Problems(vec![tollgate_core::declarative::Problem {
            path: String::new(),
            message: "the file is not UTF-8 text".into(),
        }]))
    })?;
    let document = Document::parse(&text).map_err(invalid)?;
    Ok(Loaded { document, digest })
}

/// The private database a DB-less gateway keeps its state in.
pub fn state_database_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("gateway-config.db").display())
}

/// Applies a loaded file to the gateway's private database, pruning what the
/// file no longer lists.
pub async fn apply(store: &Store, loaded: &Loaded) -> Result<String, ApplyError> {
    let report = store
        .apply_document(
            &loaded.document,
            ApplyOptions {
                prune: true,
                dry_run: false,
            },
        )
        .await?;
    Ok(report.to_string())
}

/// What identifies a version of the file cheaply: modification time and length.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Follows the file until aborted: every [`POLL`], a changed file is read,
/// validated and applied. Problems are logged once per version of the file.
pub async fn follow(path: PathBuf, store: Store, applied: [u8; 32]) {
    let mut applied = applied;
    let mut seen = stamp(&path);
    let mut reported: Option<[u8; 32]> = None;
    let mut ticker = tokio::time::interval(POLL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let now = stamp(&path);
        if now == seen {
            continue;
        }
        let loaded = match read(&path) {
            Ok(l) => l,
            Err(FileError::Read { source, .. }) => {
                // Editors replace files by renaming; try again on the next tick.
                tracing::debug!(file = %path.display(), error = %source, "cannot read the configuration file yet");
                continue;
            }
            Err(FileError::Invalid {
                problems, digest, ..
            }) => {
                seen = now;
                // Reported once per version of the file (the digest of what was read).
                if Some(digest) != reported {
                    reported = Some(digest);
                    tracing::error!(
                        file = %path.display(),
                        problems = %problems,
                        "the configuration file is not valid; still serving the last good configuration"
                    );
                }
                continue;
            }
        };
        if loaded.digest == applied {
            seen = now;
            continue;
        }
        match apply(&store, &loaded).await {
            Ok(report) => {
                seen = now;
                applied = loaded.digest;
                reported = None;
                tracing::info!(file = %path.display(), %report, "configuration file reloaded");
            }
            Err(ApplyError::Store(e)) => {
                // Left `seen` alone: the next tick tries again.
                tracing::warn!(file = %path.display(), error = %e, "cannot apply the configuration file; retrying");
            }
            Err(e) => {
                seen = now;
                tracing::error!(file = %path.display(), problems = %e, "the configuration file cannot be applied; still serving the last good configuration");
            }
        }
    }
}
