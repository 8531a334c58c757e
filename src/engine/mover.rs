//! The mover: removes the local files of jobs that move theirs (`after_upload: delete`), once
//! their objects are verified and that is recorded. Only the very file read is removed (by
//! inode, size and modification time, checked just before the unlink), and only while its job
//! still moves its files and still takes it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::upload::{identity_of, local_path};
use super::{Context, stopped};
use crate::core::lifecycle::{LocalIdentity, OnDisk, Removal, may_remove};
use crate::core::spec::JobSpec;
use crate::scan::file_version;
use crate::store::DueRemoval;

/// Files looked at per round.
const BATCH: usize = 256;
/// How often the mover looks without being woken (a removal that failed is tried again then).
const INTERVAL: Duration = Duration::from_secs(30);
/// How long a removal that failed (a folder ferry may not write) waits before the next try.
const RETRY_AFTER: Duration = Duration::from_secs(60);

pub(super) async fn mover_loop(ctx: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
    loop {
        remove_due(&ctx).await;
        tokio::select! {
            _ = ctx.removals.notified() => {}
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = stopped(&mut shutdown) => return,
        }
    }
}

/// Removes every file due, a batch at a time.
async fn remove_due(ctx: &Context) {
    loop {
        let due = match ctx.store.due_removals(BATCH).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the files due for removal; trying again later");
                return;
            }
        };
        let round = due.len();
        // One warning a round, not one a file: a read-only folder of 10,000 files would
        // otherwise write 10,000 lines a minute.
        let mut failed: Vec<(String, String)> = Vec::new();
        let mut specs: HashMap<String, Option<JobSpec>> = HashMap::new();
        for file in due {
            let spec = match specs.get(&file.upload_job_id) {
                Some(spec) => spec.clone(),
                None => {
                    let spec = match ctx.store.get_job(&file.upload_job_id).await {
                        Ok(Some(job)) => job.spec().ok().and_then(Result::ok),
                        _ => None,
                    };
                    specs.insert(file.upload_job_id.clone(), spec.clone());
                    spec
                }
            };
            match remove_one(ctx, &file, spec.as_ref()).await {
                Ok(None) => {}
                Ok(Some(error)) => failed.push((file.path.clone(), error)),
                Err(e) => {
                    tracing::warn!(upload_id = %file.upload_job_id, path = %file.path, error = %e, "cannot record a local file's removal; trying again later");
                    return;
                }
            }
        }
        if let Some((path, error)) = failed.first() {
            tracing::warn!(files = failed.len(), first = %path, %error, retry_in_s = RETRY_AFTER.as_secs(), "uploaded files cannot be removed from disk; trying again later");
        }
        if round < BATCH {
            return;
        }
    }
}

/// Removes one file if it may be; Some(error) when the removal failed (tried again later).
async fn remove_one(
    ctx: &Context,
    file: &DueRemoval,
    spec: Option<&JobSpec>,
) -> Result<Option<String>, crate::store::StoreError> {
    let Some(spec) = spec else {
        // Deleted meanwhile, or a spec that no longer reads: nothing is removed.
        return ctx.store.removal_kept(file.id).await.map(|()| None);
    };
    if !spec.matches(&file.path) {
        tracing::info!(upload_id = %file.upload_job_id, path = %file.path, "the job no longer takes this file; it is not removed");
        return ctx.store.removal_kept(file.id).await.map(|()| None);
    }
    let read = file
        .local_identity
        .as_deref()
        .and_then(LocalIdentity::parse);
    let (folder, relative) = (spec.source_folder.clone(), file.path.clone());
    let (size, mtime_ns) = (u64::try_from(file.size).unwrap_or(0), file.mtime_ns);
    let outcome = tokio::task::spawn_blocking(move || {
        remove_if_unchanged(&folder, &relative, read, size, mtime_ns)
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    match outcome {
        Ok(Removal::Remove) => {
            crate::metrics::get().local_files_removed.inc();
            tracing::info!(upload_id = %file.upload_job_id, path = %file.path, "local file removed after its upload was verified");
            ctx.store
                .removal_done(file.id, file.size, file.mtime_ns)
                .await
                .map(|_| None)
        }
        Ok(Removal::AlreadyGone) => ctx
            .store
            .removal_done(file.id, file.size, file.mtime_ns)
            .await
            .map(|_| None),
        Ok(Removal::Keep(why)) => {
            tracing::info!(upload_id = %file.upload_job_id, path = %file.path, why, "the local file is kept");
            ctx.store.removal_kept(file.id).await.map(|()| None)
        }
        Err(e) => {
            tracing::debug!(upload_id = %file.upload_job_id, path = %file.path, error = %e, "cannot remove the local file; trying again later");
            let due =
                crate::store::now_ms() + i64::try_from(RETRY_AFTER.as_millis()).unwrap_or(i64::MAX);
            ctx.store
                .removal_failed(
                    file.id,
                    &format!("uploaded, but the local file cannot be removed: {e}"),
                    due,
                )
                .await
                .map(|()| Some(e.to_string()))
        }
    }
}

/// Removes the file at the path if it is the one read, unchanged. Blocking.
///
/// The path is not resolved through links: a symbolic link is never removed, nor its target.
fn remove_if_unchanged(
    folder: &Path,
    relative: &str,
    read: Option<LocalIdentity>,
    size: u64,
    mtime_ns: i64,
) -> std::io::Result<Removal> {
    let path = local_path(folder, relative);
    let now = match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_file() => {
            let (size, mtime_ns) = file_version(&meta);
            OnDisk::File {
                identity: identity_of(&meta),
                size,
                mtime_ns,
            }
        }
        Ok(_) => OnDisk::NotAFile,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => OnDisk::Gone,
        Err(e) => return Err(e),
    };
    let Some(read) = read else {
        return Ok(Removal::Keep("which file was read is not recorded"));
    };
    let verdict = may_remove(read, size, mtime_ns, now);
    if verdict == Removal::Remove {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Removal::AlreadyGone),
            Err(e) => return Err(e),
        }
    }
    Ok(verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(path: &Path) -> (LocalIdentity, u64, i64) {
        let meta = std::fs::metadata(path).unwrap();
        let (size, mtime) = file_version(&meta);
        (identity_of(&meta), size, mtime)
    }

    #[test]
    fn only_the_file_read_unchanged_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.log");
        std::fs::write(&a, b"one").unwrap();
        let (id, size, mtime) = version(&a);
        // Rewritten: another size.
        std::fs::write(&a, b"one two").unwrap();
        assert!(matches!(
            remove_if_unchanged(dir.path(), "a.log", Some(id), size, mtime).unwrap(),
            Removal::Keep(_)
        ));
        assert!(a.exists());
        // Replaced by another file of the same size and mtime: another inode.
        let (id, size, mtime) = version(&a);
        let b = dir.path().join("b.tmp");
        std::fs::write(&b, b"two one").unwrap();
        let f = std::fs::File::options().write(true).open(&b).unwrap();
        f.set_modified(std::fs::metadata(&a).unwrap().modified().unwrap())
            .unwrap();
        drop(f);
        std::fs::rename(&b, &a).unwrap();
        assert!(matches!(
            remove_if_unchanged(dir.path(), "a.log", Some(id), size, mtime).unwrap(),
            Removal::Keep(_)
        ));
        assert!(a.exists());
        // The file read, as it was: removed; then gone.
        let (id, size, mtime) = version(&a);
        assert_eq!(
            remove_if_unchanged(dir.path(), "a.log", Some(id), size, mtime).unwrap(),
            Removal::Remove
        );
        assert!(!a.exists());
        assert_eq!(
            remove_if_unchanged(dir.path(), "a.log", Some(id), size, mtime).unwrap(),
            Removal::AlreadyGone
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_link_is_never_removed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t.log");
        std::fs::write(&target, b"x").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("l.log")).unwrap();
        let (id, size, mtime) = version(&target);
        assert!(matches!(
            remove_if_unchanged(dir.path(), "l.log", Some(id), size, mtime).unwrap(),
            Removal::Keep(_)
        ));
        assert!(target.exists() && dir.path().join("l.log").exists());
    }
}
