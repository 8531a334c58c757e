//! The scan's diff: what is on disk against what the store recorded.

/// What the last scan recorded of a file, for diffing against the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordedFile {
    pub file_id: i64,
    pub size: u64,
    pub mtime_ns: i64,
    pub local: Local,
}

/// Whether a recorded file is expected on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Local {
    /// It is (every file of a job that keeps its files).
    #[default]
    OnDisk,
    /// Its object is verified and ferry is about to remove it (`after_upload: delete`).
    Removing,
    /// Ferry removed it after its upload: its absence is not a deletion.
    Removed,
}

impl Local {
    /// From the `files.removal` column: NULL, 'due' or 'done'.
    pub fn from_removal(removal: Option<&str>) -> Self {
        match removal {
            Some("due") => Local::Removing,
            Some("done") => Local::Removed,
            _ => Local::OnDisk,
        }
    }

    /// As the API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Local::OnDisk => "on_disk",
            Local::Removing => "removing",
            Local::Removed => "removed",
        }
    }
}

/// A file seen on disk during a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenFile {
    pub path: String,
    pub size: u64,
    pub mtime_ns: i64,
}

/// What the scan must change in the store.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<SeenFile>,
    /// (file id, what is on disk now).
    pub changed: Vec<(i64, SeenFile)>,
    pub removed: Vec<i64>,
    /// Files ferry was removing that are gone: removed (before a stop, or by someone else).
    pub removed_locally: Vec<i64>,
}

impl Changes {
    pub fn len(&self) -> usize {
        self.added.len() + self.changed.len() + self.removed.len() + self.removed_locally.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The files the store recorded of a job, for one scan's diff, in as little memory as a million
/// of them allow: every path in one buffer, and 40 bytes a record beside it, sorted by path and
/// found by binary search. A map of `String` to record took 200 MiB for a million files (the
/// rows read, and the map built from them, at once); this takes the paths' bytes and 40 MiB.
#[derive(Debug)]
pub struct Recorded {
    /// Every path, one after another, in the order of `entries`.
    paths: String,
    /// Sorted by path (bytes); each ends its path at `end` in `paths`, and starts where the
    /// one before ended.
    entries: Vec<(usize, RecordedFile)>,
    sorted: bool,
}

impl Recorded {
    /// Room for `records` records of `path_bytes` bytes of paths in all (both may be guesses).
    pub fn with_capacity(records: usize, path_bytes: usize) -> Self {
        Recorded {
            paths: String::with_capacity(path_bytes),
            entries: Vec::with_capacity(records),
            sorted: true,
        }
    }

    /// Adds a record; in path order (as the store reads them) nothing more is needed, and
    /// otherwise the records are sorted once, at the first lookup's preparation ([`Differ::new`]).
    pub fn push(&mut self, path: &str, record: RecordedFile) {
        if self.sorted && !self.entries.is_empty() && path <= self.path(self.entries.len() - 1) {
            self.sorted = false;
        }
        self.paths.push_str(path);
        self.entries.push((self.paths.len(), record));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The record of this path, if any.
    pub fn get(&self, path: &str) -> Option<&RecordedFile> {
        debug_assert!(self.sorted || self.entries.is_empty());
        self.find(path).map(|i| &self.entries[i].1)
    }

    fn path(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.entries[i - 1].0 };
        &self.paths[start..self.entries[i].0]
    }

    fn find(&self, path: &str) -> Option<usize> {
        let (mut low, mut high) = (0, self.entries.len());
        while low < high {
            let mid = low + (high - low) / 2;
            match self.path(mid).cmp(path) {
                std::cmp::Ordering::Less => low = mid + 1,
                std::cmp::Ordering::Greater => high = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    /// Sorted by path, whatever order the records came in.
    fn into_sorted(self) -> Self {
        if self.sorted {
            return self;
        }
        let mut pairs: Vec<(String, RecordedFile)> = (0..self.entries.len())
            .map(|i| (self.path(i).to_owned(), self.entries[i].1))
            .collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut sorted = Recorded::with_capacity(pairs.len(), self.paths.len());
        for (path, record) in pairs {
            sorted.push(&path, record);
        }
        sorted
    }
}

impl Default for Recorded {
    fn default() -> Self {
        Recorded::with_capacity(0, 0)
    }
}

impl FromIterator<(String, RecordedFile)> for Recorded {
    fn from_iter<I: IntoIterator<Item = (String, RecordedFile)>>(records: I) -> Self {
        let mut recorded = Recorded::with_capacity(0, 0);
        for (path, record) in records {
            recorded.push(&path, record);
        }
        recorded.into_sorted()
    }
}

impl std::ops::Index<&str> for Recorded {
    type Output = RecordedFile;

    fn index(&self, path: &str) -> &RecordedFile {
        self.get(path)
            .unwrap_or_else(|| panic!("no record of {path:?}"))
    }
}

/// Compares files as they are seen against the recorded ones, one at a time.
///
/// A file is new when no record has its path, changed when its size or its modification time
/// (to the nanosecond) differs, and removed when the scan ends without seeing it. A file ferry
/// removed after its upload is not removed when unseen, and is changed when seen again (a file
/// put back is uploaded again, then removed again).
pub struct Differ {
    recorded: Recorded,
    /// Whether each record (by its place in `recorded`) was seen.
    seen: Vec<bool>,
    pending: Changes,
}

impl Differ {
    pub fn new(recorded: Recorded) -> Self {
        let recorded = recorded.into_sorted();
        Differ {
            seen: vec![false; recorded.len()],
            recorded,
            pending: Changes::default(),
        }
    }

    pub fn observe(&mut self, seen: SeenFile) {
        let found = self
            .recorded
            .find(&seen.path)
            .filter(|&i| !std::mem::replace(&mut self.seen[i], true));
        match found.map(|i| self.recorded.entries[i].1) {
            None => self.pending.added.push(seen),
            Some(r)
                if r.local == Local::Removed
                    || r.size != seen.size
                    || r.mtime_ns != seen.mtime_ns =>
            {
                self.pending.changed.push((r.file_id, seen))
            }
            Some(_) => {}
        }
    }

    /// Takes the changes gathered so far (to apply them in batches).
    pub fn take(&mut self) -> Changes {
        std::mem::take(&mut self.pending)
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Ends the scan: every record not seen is removed.
    pub fn finish(self) -> Changes {
        self.finish_keeping(&[])
    }

    /// Ends a scan that could not read everything: a record not seen is removed unless it lies
    /// at or under one of `unread` (relative paths; "" is the whole folder). What could not be
    /// read is not known to be gone.
    pub fn finish_keeping(mut self, unread: &[String]) -> Changes {
        let under = |path: &str| {
            unread.iter().any(|u| {
                u.is_empty()
                    || path == u
                    || (path.len() > u.len()
                        && path.starts_with(u.as_str())
                        && path.as_bytes()[u.len()] == b'/')
            })
        };
        let (mut removed, mut removed_locally) = (Vec::new(), Vec::new());
        for (i, (_, r)) in self.recorded.entries.iter().enumerate() {
            if self.seen[i] {
                continue;
            }
            match r.local {
                _ if under(self.recorded.path(i)) => {}
                Local::OnDisk => removed.push(r.file_id),
                Local::Removing => removed_locally.push(r.file_id),
                Local::Removed => {}
            }
        }
        removed.sort_unstable();
        removed_locally.sort_unstable();
        self.pending.removed = removed;
        self.pending.removed_locally = removed_locally;
        self.pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_under_an_unread_folder_are_kept() {
        let rec = |id| RecordedFile {
            file_id: id,
            size: 1,
            mtime_ns: 1,
            local: Local::OnDisk,
        };
        let records = [("a/x", 1), ("a/y/z", 2), ("ab/x", 3), ("b", 4), ("c", 5)];
        let recorded = || -> Recorded {
            records
                .into_iter()
                .map(|(p, id)| (p.to_owned(), rec(id)))
                .collect()
        };
        let mut d = Differ::new(recorded());
        d.observe(seen("c", 1, 1));
        // "a" could not be listed and "b" could not be stat'ed: only "ab/x" is known gone.
        let changes = d.finish_keeping(&["a".to_owned(), "b".to_owned()]);
        assert_eq!(changes.removed, vec![3]);
        // The folder itself unread: nothing is known gone.
        let d = Differ::new(recorded());
        assert!(d.finish_keeping(&[String::new()]).removed.is_empty());
    }

    fn seen(path: &str, size: u64, mtime_ns: i64) -> SeenFile {
        SeenFile {
            path: path.into(),
            size,
            mtime_ns,
        }
    }

    fn recorded(entries: &[(&str, i64, u64, i64)]) -> Recorded {
        entries
            .iter()
            .map(|(p, id, size, mtime_ns)| {
                (
                    p.to_string(),
                    RecordedFile {
                        file_id: *id,
                        size: *size,
                        mtime_ns: *mtime_ns,
                        local: Local::OnDisk,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn finds_new_changed_and_removed_files() {
        let mut d = Differ::new(recorded(&[
            ("same", 1, 10, 100),
            ("grown", 2, 10, 100),
            ("touched", 3, 10, 100),
            ("gone", 4, 10, 100),
        ]));
        d.observe(seen("same", 10, 100));
        d.observe(seen("grown", 11, 100));
        // Same size, mtime moved by one nanosecond.
        d.observe(seen("touched", 10, 101));
        d.observe(seen("new", 5, 7));
        let c = d.finish();
        assert_eq!(c.added, vec![seen("new", 5, 7)]);
        assert_eq!(
            c.changed,
            vec![(2, seen("grown", 11, 100)), (3, seen("touched", 10, 101))]
        );
        assert_eq!(c.removed, vec![4]);
    }

    #[test]
    fn files_ferry_removed_are_not_deletions() {
        let record = |file_id, local| RecordedFile {
            file_id,
            size: 10,
            mtime_ns: 100,
            local,
        };
        let rec: Recorded = [
            ("moved", record(1, Local::Removed)),
            ("moving", record(2, Local::Removing)),
            ("moving-still-there", record(3, Local::Removing)),
            ("back", record(4, Local::Removed)),
        ]
        .into_iter()
        .map(|(p, r)| (p.to_owned(), r))
        .collect();
        let mut d = Differ::new(rec);
        d.observe(seen("moving-still-there", 10, 100));
        // Put back as it was: uploaded again all the same.
        d.observe(seen("back", 10, 100));
        let c = d.finish();
        assert!(c.removed.is_empty());
        assert_eq!(c.removed_locally, vec![2]);
        assert_eq!(c.changed, vec![(4, seen("back", 10, 100))]);
    }

    #[test]
    fn records_in_any_order_are_found_by_path() {
        let paths = ["b/c", "a-c", "a/b", "a", "é/x", "a/b/c", "z"];
        let rec = |id| RecordedFile {
            file_id: id,
            size: 1,
            mtime_ns: 1,
            local: Local::OnDisk,
        };
        let recorded: Recorded = paths
            .iter()
            .zip(1..)
            .map(|(p, id)| (p.to_string(), rec(id)))
            .collect();
        assert_eq!(recorded.len(), paths.len());
        for (path, id) in paths.iter().zip(1..) {
            assert_eq!(recorded[path].file_id, id, "{path}");
        }
        assert!(recorded.get("a/").is_none() && recorded.get("").is_none());
        // In the store's order (bytes), pushed one by one: no sort needed, the same lookups.
        let mut sorted_paths = paths;
        sorted_paths.sort();
        let mut in_order = Recorded::with_capacity(paths.len(), 64);
        for path in sorted_paths {
            in_order.push(path, recorded[path]);
        }
        assert!(in_order.sorted);
        let mut d = Differ::new(in_order);
        for path in paths {
            d.observe(seen(path, 1, 1));
        }
        // A path seen twice is not its record twice.
        d.observe(seen("z", 1, 1));
        let c = d.finish();
        assert_eq!(c.added, vec![seen("z", 1, 1)]);
        assert!(c.changed.is_empty() && c.removed.is_empty());
    }

    #[test]
    fn nothing_changed_means_no_changes() {
        let mut d = Differ::new(recorded(&[("a", 1, 1, 1), ("b/c", 2, 2, 2)]));
        d.observe(seen("a", 1, 1));
        d.observe(seen("b/c", 2, 2));
        assert!(d.finish().is_empty());
    }

    #[test]
    fn changes_can_be_taken_in_batches() {
        let mut d = Differ::new(Recorded::default());
        d.observe(seen("a", 1, 1));
        assert_eq!(d.pending_len(), 1);
        assert_eq!(d.take().added.len(), 1);
        d.observe(seen("b", 1, 1));
        let rest = d.finish();
        assert_eq!(rest.added, vec![seen("b", 1, 1)]);
    }
}
