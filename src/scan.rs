//! Walking a source folder: the disk edge of the scan.
//!
//! The walk streams (walkdir), so memory does not grow with the tree. Only regular files are
//! taken: symbolic links are not followed (or, with `SymlinkPolicy::Inside`, only those whose
//! target lies inside the folder), and fifos, sockets and devices are passed over so that
//! nothing blocks the walk. A file that vanishes or cannot be read mid-walk is that file's
//! problem, logged, never the scan's.

use std::ops::ControlFlow;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use walkdir::WalkDir;

use crate::core::diff::SeenFile;
use crate::core::plan::relative_key_path;
use crate::core::spec::{JobSpec, SymlinkPolicy};

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
/// `visit` breaks. Blocking: run it off the async workers.
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
) {
    let root = spec.source_folder.as_path();
    let entries = WalkDir::new(root)
        .follow_links(links == SymlinkPolicy::Inside)
        .min_depth(1)
        // A stable order: files are uploaded in the order users see in `ls -R`.
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| !e.path_is_symlink() || link_stays_inside(root, e.path()));
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let path = e.path().map(Path::display).map(|p| p.to_string());
                tracing::warn!(path, error = %e, "cannot read an entry of the source folder; skipping it");
                continue;
            }
        };
        if !entry.file_type().is_file() || exclude.iter().any(|p| p == entry.path()) {
            continue;
        }
        let relative = match relative_key_path(root, entry.path()) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(path = %entry.path().display(), error = %e, "skipping a file that cannot be named in S3");
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
                    return;
                }
            }
            Err(e) => {
                // Vanished between listing and stat: the next scan will not see it either.
                tracing::warn!(path = %relative, error = %e, "cannot stat a file; skipping it");
            }
        }
    }
}
