//! GitOps: the jobs declared in FERRY_MANIFESTS_DIR are applied at start and on every change of
//! the folder (with the periodic scan as the net), and the jobs whose documents are gone are
//! pruned (their objects stay). A broken, invalid or hostile document is reported in the log
//! and at GET /manifests, and harms no other job; the jobs of a file that cannot be read whole
//! are left as they are rather than pruned.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::{Context, stopped};
use crate::core::spec::JobSpec;
use crate::manifest::{DeclaredJob, MAX_MANIFEST_BYTES, ManifestError, parse_file};
use crate::store::{Applied, Origin, StoreError};
use crate::watch::FolderWatcher;

/// What the last sync of the manifests folder found.
#[derive(Debug, Clone, Default)]
pub struct ManifestStatus {
    pub folder: Option<PathBuf>,
    /// When the last sync ended (RFC 3339).
    pub synced_at: Option<String>,
    /// The jobs declared, by name, with the document that declares them.
    pub jobs: BTreeMap<String, String>,
    pub errors: Vec<ManifestError>,
}

/// Shared between the sync loop and the API.
#[derive(Default)]
pub struct Manifests {
    status: Mutex<ManifestStatus>,
}

impl Manifests {
    pub fn status(&self) -> ManifestStatus {
        self.status.lock().expect("manifest status lock").clone()
    }
}

/// Applies the folder's manifests now, whenever it changes, and every `interval`.
pub async fn run(
    ctx: Arc<Context>,
    folder: PathBuf,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let (watcher, mut changed) = FolderWatcher::new(false);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // A ConfigMap mount swaps a symlinked folder: watch again on every round.
        watcher.ensure("manifests", &folder);
        sync(&ctx, &folder).await;
        tokio::select! {
            _ = tick.tick() => {}
            Some(_) = changed.recv() => {
                // Gather the burst an editor or a ConfigMap update makes.
                tokio::time::sleep(Duration::from_millis(200)).await;
                while changed.try_recv().is_ok() {}
            }
            _ = stopped(&mut shutdown) => return,
        }
    }
}

/// One reconciliation of the manifests folder against the jobs it declared.
pub async fn sync(ctx: &Context, folder: &Path) {
    let folder_owned = folder.to_path_buf();
    let read = tokio::task::spawn_blocking(move || read_folder(&folder_owned))
        .await
        .unwrap_or_else(|e| Err(format!("the manifest reader failed: {e}")));
    let (declared, mut errors, unreadable) = match read {
        Ok(found) => found,
        Err(reason) => {
            tracing::warn!(folder = %folder.display(), reason, "cannot read the manifests folder; jobs are left as they are");
            let mut status = ctx.manifests.status.lock().expect("manifest status lock");
            status.folder = Some(folder.to_path_buf());
            status.errors = vec![ManifestError {
                file: folder.display().to_string(),
                document: 0,
                line: 0,
                reason,
            }];
            return;
        }
    };

    // The first document to declare a name wins; later ones are reported.
    let mut jobs: BTreeMap<String, DeclaredJob> = BTreeMap::new();
    for job in declared {
        if let Some(first) = jobs.get(&job.name) {
            errors.push(error_at(
                &job.source,
                format!(
                    "metadata.name {:?} is already declared by {}; names must be unique",
                    job.name, first.source
                ),
            ));
        } else {
            jobs.insert(job.name.clone(), job);
        }
    }

    let mut applied = BTreeMap::new();
    for job in jobs.values() {
        if !ctx.settings.allowed_roots.is_empty() {
            let inside = tokio::fs::canonicalize(&job.fields.source_folder)
                .await
                .is_ok_and(|c| crate::core::spec::within_roots(&c, &ctx.settings.allowed_roots));
            if !inside {
                errors.push(error_at(
                    &job.source,
                    format!(
                        "spec.sourceFolder {:?} does not exist or lies outside FERRY_ALLOWED_ROOTS",
                        job.fields.source_folder
                    ),
                ));
                continue;
            }
        }
        let spec = match JobSpec::parse(&job.name, &job.fields) {
            Ok(spec) => spec,
            Err(e) => {
                errors.push(error_at(&job.source, format!("spec: {e}")));
                continue;
            }
        };
        let result = ctx
            .store
            .apply_job(&job.name, &spec, Origin::Manifest(&job.source))
            .await;
        match result {
            Ok((outcome, row)) => {
                if outcome != Applied::Unchanged {
                    tracing::info!(upload_id = %job.name, manifest = %job.source, generation = row.generation, outcome = ?outcome, "manifest applied");
                    ctx.request_scan(&job.name);
                    ctx.wake_janitor();
                }
                applied.insert(job.name.clone(), job.source.clone());
            }
            Err(StoreError::Owned { name, owner }) => {
                errors.push(error_at(
                    &job.source,
                    format!(
                        "a job named {name:?} already exists and is declared by {owner}; rename one of them"
                    ),
                ));
            }
            Err(e @ StoreError::Overlap { .. }) => {
                errors.push(error_at(&job.source, format!("spec.keyPrefix: {e}")));
            }
            Err(e) => tracing::error!(upload_id = %job.name, error = %e, "cannot apply a manifest"),
        }
    }

    // Prune the jobs whose documents are gone, but not those of files that could not be read
    // whole: a broken edit must not delete a job.
    match ctx.store.manifest_jobs().await {
        Ok(existing) => {
            for (name, source) in existing {
                let (file, _) = split_source(&source);
                // Declared still, or its file is unreadable or has a broken document (which may be
                // this job's, mid-edit): keep it until the file is fixed.
                if jobs.contains_key(&name)
                    || unreadable.contains(&file)
                    || errors.iter().any(|e| e.file == file)
                {
                    continue;
                }
                match ctx.store.delete_job(&name).await {
                    Ok(_) => {
                        tracing::info!(upload_id = %name, manifest = %source, "its manifest document is gone: job pruned (objects stay)");
                        ctx.forget_job(&name);
                        ctx.wake_janitor();
                    }
                    Err(e) => tracing::error!(upload_id = %name, error = %e, "cannot prune a job"),
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot list the jobs declared by manifests"),
    }

    for e in &errors {
        tracing::warn!(file = %e.file, document = e.document, line = e.line, reason = %e.reason, "manifest document not applied");
    }
    let mut status = ctx.manifests.status.lock().expect("manifest status lock");
    *status = ManifestStatus {
        folder: Some(folder.to_path_buf()),
        synced_at: Some(super::now_rfc3339()),
        jobs: applied,
        errors,
    };
}

/// An error about the document at `source` (file.yaml#2).
fn error_at(source: &str, reason: String) -> ManifestError {
    let (file, document) = split_source(source);
    ManifestError {
        file,
        document,
        line: 0,
        reason,
    }
}

/// `file.yaml#2` to (`file.yaml`, 2).
fn split_source(source: &str) -> (String, usize) {
    match source.rsplit_once('#') {
        Some((file, n)) => (file.to_owned(), n.parse().unwrap_or(0)),
        None => (source.to_owned(), 0),
    }
}

type Found = (Vec<DeclaredJob>, Vec<ManifestError>, HashSet<String>);

/// Reads every `.yaml`/`.yml` file of the folder (not hidden, symlinks followed as a ConfigMap
/// mount needs), in name order. Blocking.
fn read_folder(folder: &Path) -> Result<Found, String> {
    let entries =
        std::fs::read_dir(folder).map_err(|e| format!("cannot list {}: {e}", folder.display()))?;
    let mut names: Vec<(String, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_owned();
            let is_yaml = name.ends_with(".yaml") || name.ends_with(".yml");
            (is_yaml && !name.starts_with('.')).then(|| (name, e.path()))
        })
        .collect();
    names.sort();
    let mut declared = Vec::new();
    let mut errors = Vec::new();
    let mut unreadable = HashSet::new();
    for (name, path) in names {
        let whole_file = |reason: String| ManifestError {
            file: name.clone(),
            document: 0,
            line: 0,
            reason,
        };
        let meta = match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => m,
            Ok(_) => continue,
            Err(e) => {
                errors.push(whole_file(format!("cannot read it: {e}")));
                unreadable.insert(name);
                continue;
            }
        };
        if meta.len() > MAX_MANIFEST_BYTES {
            errors.push(whole_file(format!(
                "it is {} bytes; manifest files may be at most {MAX_MANIFEST_BYTES}",
                meta.len()
            )));
            unreadable.insert(name);
            continue;
        }
        let text = match std::fs::read(&path).map(String::from_utf8) {
            Ok(Ok(t)) => t,
            Ok(Err(_)) => {
                errors.push(whole_file("it is not UTF-8 text".into()));
                unreadable.insert(name);
                continue;
            }
            Err(e) => {
                errors.push(whole_file(format!("cannot read it: {e}")));
                unreadable.insert(name);
                continue;
            }
        };
        for result in parse_file(&name, &text) {
            match result {
                Ok(job) => declared.push(job),
                Err(e) => errors.push(e),
            }
        }
    }
    Ok((declared, errors, unreadable))
}
