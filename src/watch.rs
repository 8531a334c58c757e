//! Filesystem notifications (inotify on Linux, through the notify crate): the edge that turns
//! a change on disk into a key (a job id, or the manifests folder) on a channel, so that the
//! change shows within a second. The periodic scan stays the net under it: a watch that cannot be
//! set (too many folders for the kernel's inotify limits) is logged, never fatal.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Watches one folder per key and sends the key when something changes under it.
pub struct FolderWatcher {
    watches: Mutex<HashMap<String, (PathBuf, RecommendedWatcher)>>,
    changed: mpsc::UnboundedSender<String>,
    mode: RecursiveMode,
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
                watches: Mutex::default(),
                changed,
                mode,
            },
            keys,
        )
    }

    /// Makes sure `folder` is watched for `key` (replacing a watch of another folder).
    pub fn ensure(&self, key: &str, folder: &Path) {
        let mut watches = self.watches.lock().expect("watches lock");
        if watches.get(key).is_some_and(|(f, _)| f == folder) {
            return;
        }
        watches.remove(key);
        let tx = self.changed.clone();
        let owner = key.to_owned();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Reads (ours included) are not changes.
            if let Ok(event) = event
                && !matches!(event.kind, EventKind::Access(_))
            {
                let _ = tx.send(owner.clone());
            }
        });
        let mut watcher = match watcher {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(key, error = %e, "cannot create a filesystem watcher; changes show at the next periodic scan");
                return;
            }
        };
        if let Err(e) = watcher.watch(folder, self.mode) {
            tracing::warn!(key, folder = %folder.display(), error = %e, "cannot watch the folder (see fs.inotify.max_user_watches); changes show at the next periodic scan");
            return;
        }
        tracing::debug!(key, folder = %folder.display(), "watching for changes");
        watches.insert(key.to_owned(), (folder.to_path_buf(), watcher));
    }

    pub fn forget(&self, key: &str) {
        self.watches.lock().expect("watches lock").remove(key);
    }
}
