//! Filesystem notifications (inotify on Linux, through the notify crate): the edge that turns
//! a change on disk into a key (a job id, or the manifests folder) on a channel, so that the
//! change shows within a second. The periodic scan stays the net under it: a watch that cannot be
//! set (the kernel's inotify limits) is logged, naming the limit, never fatal.
//!
//! One watcher (one inotify instance) serves every folder. The kernel allows 128 instances per
//! user by default (fs.inotify.max_user_instances), shared with every other program of that
//! user: an instance per job left jobs past the 127th without live changes, and starved the
//! programs beside ferry.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Which keys each watched folder is watched for; shared with the watcher's event handler.
type Owners = Arc<Mutex<HashMap<PathBuf, BTreeSet<String>>>>;

/// Watches folders, each for one or more keys, and sends a key when something changes under its
/// folder.
pub struct FolderWatcher {
    inner: Mutex<Inner>,
    owners: Owners,
    changed: mpsc::UnboundedSender<String>,
    mode: RecursiveMode,
}

struct Inner {
    /// Created at the first watch; None until then, or while the kernel refuses an instance.
    watcher: Option<RecommendedWatcher>,
    /// The folder each key is watched for.
    folders: HashMap<String, PathBuf>,
}

/// The kernel limit a failure hit, named as a person would look it up, with its value here.
fn limit_hit(error: &notify::Error, creating: bool) -> String {
    let setting = match &error.kind {
        notify::ErrorKind::MaxFilesWatch => "fs.inotify.max_user_watches",
        notify::ErrorKind::Io(e) if e.raw_os_error() == Some(28) => "fs.inotify.max_user_watches",
        notify::ErrorKind::Io(e) if e.raw_os_error() == Some(24) && creating => {
            "fs.inotify.max_user_instances"
        }
        _ => return String::new(),
    };
    let file = format!("/proc/sys/{}", setting.replace('.', "/"));
    match std::fs::read_to_string(file) {
        Ok(value) => format!(" (the kernel's {setting}, {}, is reached)", value.trim()),
        Err(_) => format!(" (the kernel's {setting} is reached)"),
    }
}

impl FolderWatcher {
    /// A watcher, and the channel the keys of changed folders arrive on.
    pub fn new(recursive: bool) -> (Self, mpsc::UnboundedReceiver<String>) {
        let (changed, keys) = mpsc::unbounded_channel();
        let mode = if recursive {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        (
            FolderWatcher {
                inner: Mutex::new(Inner {
                    watcher: None,
                    folders: HashMap::new(),
                }),
                owners: Owners::default(),
                changed,
                mode,
            },
            keys,
        )
    }

    fn create(&self) -> notify::Result<RecommendedWatcher> {
        let (tx, owners, recursive) = (
            self.changed.clone(),
            self.owners.clone(),
            self.mode == RecursiveMode::Recursive,
        );
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Reads (ours included) are not changes.
            let Ok(event) = event else { return };
            if matches!(event.kind, EventKind::Access(_)) {
                return;
            }
            let owners = owners.lock().expect("watch owners lock");
            let mut keys = BTreeSet::new();
            for path in &event.paths {
                for (folder, owned) in owners.iter() {
                    let under = if recursive {
                        path.starts_with(folder)
                    } else {
                        path.parent() == Some(folder.as_path()) || path == folder
                    };
                    if under {
                        keys.extend(owned.iter().cloned());
                    }
                }
            }
            for key in keys {
                let _ = tx.send(key);
            }
        })
    }

    /// Makes sure `folder` is watched for `key` (replacing a watch of another folder).
    pub fn ensure(&self, key: &str, folder: &Path) {
        let mut inner = self.inner.lock().expect("watcher lock");
        if inner.folders.get(key).is_some_and(|f| f == folder) {
            return;
        }
        Self::forget_locked(&mut inner, &self.owners, key);
        if inner.watcher.is_none() {
            match self.create() {
                Ok(w) => inner.watcher = Some(w),
                Err(e) => {
                    tracing::warn!(key, error = %e, "cannot create a filesystem watcher{}; changes show at the next periodic scan", limit_hit(&e, true));
                    return;
                }
            }
        }
        // The owners' lock is never held across a call into the watcher: its thread takes that
        // lock to deliver an event, and the call waits for that thread. `inner` serialises the
        // changes to `owners`, so the look stays true until the insert.
        let first = !self
            .owners
            .lock()
            .expect("watch owners lock")
            .contains_key(folder);
        if first {
            let watcher = inner.watcher.as_mut().expect("created above");
            if let Err(e) = watcher.watch(folder, self.mode) {
                tracing::warn!(key, folder = %folder.display(), error = %e, "cannot watch the folder{}; changes show at the next periodic scan", limit_hit(&e, false));
                return;
            }
        }
        self.owners
            .lock()
            .expect("watch owners lock")
            .entry(folder.to_path_buf())
            .or_default()
            .insert(key.to_owned());
        tracing::debug!(key, folder = %folder.display(), "watching for changes");
        inner.folders.insert(key.to_owned(), folder.to_path_buf());
    }

    fn forget_locked(inner: &mut Inner, owners: &Owners, key: &str) {
        let Some(folder) = inner.folders.remove(key) else {
            return;
        };
        let now_unwatched = {
            let mut owners = owners.lock().expect("watch owners lock");
            let empty = owners.get_mut(&folder).is_some_and(|keys| {
                keys.remove(key);
                keys.is_empty()
            });
            if empty {
                owners.remove(&folder);
            }
            empty
        };
        if now_unwatched && let Some(w) = inner.watcher.as_mut() {
            // Gone already (the folder was removed) is fine.
            let _ = w.unwatch(&folder);
        }
    }

    pub fn forget(&self, key: &str) {
        let mut inner = self.inner.lock().expect("watcher lock");
        Self::forget_locked(&mut inner, &self.owners, key);
    }
}
