//! Walking a source folder: the disk edge of the scan.
//!
//! The walk streams (walkdir), so memory does not grow with the tree. Only regular files are
//! taken: symbolic links are not followed (or, with `SymlinkPolicy::Inside`, only those whose
//! target lies inside the folder), and fifos, sockets and devices are passed over so that
//! nothing blocks the walk. A file that vanishes mid-walk is simply not there. Anything else the
//! walk cannot read (a folder it may not list, a file it may not stat, a name S3 cannot hold) is
//! reported in the [`WalkReport`]: an unreadable folder is not an empty one, and the scan must
//! neither forget the files recorded there nor let the job claim it is complete.

use std::ops::ControlFlow;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use walkdir::WalkDir;

use crate::core::diff::SeenFile;
use crate::core::plan::relative_key_path;
use crate::core::spec::{JobSpec, SymlinkPolicy};

/// A place under the folder the walk could not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// '/'-separated, relative to the job's folder; "" for the folder itself.
    pub path: String,
    pub error: String,
}

/// What a walk could not read. Empty: every file under the folder was seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalkReport {
    pub unreadable: Vec<Unreadable>,
}

impl WalkReport {
    /// The places and errors, one `path: error` a line, at most `MAX_LISTED` of them (a folder
    /// of a million unreadable files must not make a condition of a million lines).
    pub fn summary(&self) -> Option<String> {
        const MAX_LISTED: usize = 10;
        if self.unreadable.is_empty() {
            return None;
        }
        let mut lines: Vec<String> = self
            .unreadable
            .iter()
            .take(MAX_LISTED)
            .map(|u| {
                let path = if u.path.is_empty() { "." } else { &u.path };
                format!("{path}: {}", u.error)
            })
            .collect();
        if self.unreadable.len() > MAX_LISTED {
            lines.push(format!("and {} more", self.unreadable.len() - MAX_LISTED));
        }
        Some(lines.join("\n"))
    }

    /// The relative paths under which recorded files must be kept, though the walk did not see
    /// them.
    pub fn kept_prefixes(&self) -> Vec<String> {
        self.unreadable.iter().map(|u| u.path.clone()).collect()
    }
}

/// The path of `path` relative to `root`, '/'-separated and lossy, for reports.
fn report_path(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .map(|p| {
            p.components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/")
        })
        .unwrap_or_default()
}

/// Size and modification time (nanoseconds since the epoch) of a file.
pub fn file_version(meta: &std::fs::Metadata) -> (u64, i64) {
    (meta.len(), mtime_ns(meta.modified().ok()))
}

fn mtime_ns(modified: Option<SystemTime>) -> i64 {
    match modified.map(|t| t.duration_since(UNIX_EPOCH)) {
        Some(Ok(d)) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Some(Err(before)) => -i64::try_from(before.duration().as_nanos()).unwrap_or(i64::MAX),
        None => 0,
    }
}

/// Whether a symbolic link resolves to somewhere inside `root` (canonical).
fn link_stays_inside(root: &Path, link: &Path) -> bool {
    match std::fs::canonicalize(link) {
        Ok(target) if target.starts_with(root) && target != root => true,
        Ok(target) => {
            tracing::warn!(path = %link.display(), target = %target.display(), "a symbolic link leads out of the source folder; skipping it");
            false
        }
        // A dangling link: nothing to upload.
        Err(_) => false,
    }
}

/// Calls `visit` with every regular file under the job's folder that its pattern matches, until
/// `visit` breaks, and reports what it could not read. Blocking: run it off the async workers.
///
/// A folder that one of the job's excludes matches by its own path (`tmp`, `**/node_modules`)
/// is skipped unread: nothing in it is taken, and what cannot be read in it is not reported.
///
/// Paths in `exclude` (ferry's own database files, should they lie in a source folder) are
/// never taken: they change with every upload. They must be in the same form as the walk's
/// paths (both canonical), and so must the job's folder.
///
/// With `SymlinkPolicy::Inside`, a link is followed when its target, resolved, lies inside the
/// folder; a link to a folder is walked like a folder, and a loop of links is reported once and
/// skipped (walkdir detects it).
pub fn walk(
    spec: &JobSpec,
    exclude: &[std::path::PathBuf],
    links: SymlinkPolicy,
    mut visit: impl FnMut(SeenFile) -> ControlFlow<()>,
) -> WalkReport {
    let root = spec.source_folder.as_path();
    let mut report = WalkReport::default();
    let entries = WalkDir::new(root)
        .follow_links(links == SymlinkPolicy::Inside)
        .min_depth(1)
        // A stable order: files are uploaded in the order users see in `ls -R`.
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            (!e.path_is_symlink() || link_stays_inside(root, e.path()))
                && !(e.file_type().is_dir()
                    && relative_key_path(root, e.path()).is_ok_and(|r| spec.excludes_folder(&r)))
        });
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                if e.loop_ancestor().is_some() {
                    // A loop of links: walked once already, nothing is missed.
                    tracing::warn!(error = %e, "a loop of symbolic links is walked once");
                    continue;
                }
                if e.io_error().map(std::io::Error::kind) == Some(std::io::ErrorKind::NotFound) {
                    continue; // removed while the walk ran
                }
                let path = e.path().map(|p| report_path(root, p)).unwrap_or_default();
                let error = e
                    .io_error()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| e.to_string());
                tracing::warn!(upload_path = %path, %error, "cannot read part of the source folder; the job cannot be complete until it can");
                report.unreadable.push(Unreadable { path, error });
                continue;
            }
        };
        if !entry.file_type().is_file() || exclude.iter().any(|p| p == entry.path()) {
            continue;
        }
        let relative = match relative_key_path(root, entry.path()) {
            Ok(r) => r,
            Err(e) => {
                let path = report_path(root, entry.path());
                if spec.matches(&path) {
                    tracing::warn!(upload_path = %path, error = %e, "a file cannot be named in S3");
                    report.unreadable.push(Unreadable {
                        path,
                        error: e.to_string(),
                    });
                }
                continue;
            }
        };
        if !spec.matches(&relative) {
            continue;
        }
        match entry.metadata() {
            Ok(meta) => {
                let (size, mtime_ns) = file_version(&meta);
                if visit(SeenFile {
                    path: relative,
                    size,
                    mtime_ns,
                })
                .is_break()
                {
                    return report;
                }
            }
            // Vanished between listing and stat: the next scan will not see it either.
            Err(e)
                if e.io_error().map(std::io::Error::kind) == Some(std::io::ErrorKind::NotFound) => {
            }
            Err(e) => {
                let error = e
                    .io_error()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| e.to_string());
                tracing::warn!(upload_path = %relative, %error, "cannot stat a file");
                report.unreadable.push(Unreadable {
                    path: relative,
                    error,
                });
            }
        }
    }
    report
}
