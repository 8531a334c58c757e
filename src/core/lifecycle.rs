//! What happens around an object's upload, decided without I/O: whether a local file may be
//! removed after it (`after_upload: delete`), whether a batch of prunes may go (the guard), and
//! what a listing of the bucket says drifted from what ferry recorded (resync).

use std::fmt;

/// What becomes of a local file once its object is verified.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AfterUpload {
    /// It stays (the default).
    #[default]
    Keep,
    /// It is removed: a move, for log shipping.
    Delete,
}

impl AfterUpload {
    pub fn parse(s: Option<&str>) -> Result<Self, String> {
        match s {
            None | Some("keep") => Ok(AfterUpload::Keep),
            Some("delete") => Ok(AfterUpload::Delete),
            Some(other) => Err(format!(
                "after_upload {:?} is not accepted; use keep (the default) or delete",
                other.chars().take(40).collect::<String>()
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AfterUpload::Keep => "keep",
            AfterUpload::Delete => "delete",
        }
    }
}

/// Which file a path names on disk: its device and inode, size and modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalIdentity {
    pub dev: u64,
    pub ino: u64,
}

impl fmt::Display for LocalIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.dev, self.ino)
    }
}

impl LocalIdentity {
    /// Reads the `dev:ino` form [`fmt::Display`] writes.
    pub fn parse(s: &str) -> Option<Self> {
        let (dev, ino) = s.split_once(':')?;
        Some(LocalIdentity {
            dev: dev.parse().ok()?,
            ino: ino.parse().ok()?,
        })
    }
}

/// What is at a file's path when ferry is about to remove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDisk {
    /// Nothing: removed already (by ferry before a stop, or by someone else).
    Gone,
    /// Not a regular file (a symbolic link, a folder): never removed.
    NotAFile,
    /// A regular file.
    File {
        identity: LocalIdentity,
        size: u64,
        mtime_ns: i64,
    },
}

/// What to do with a local file whose object is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// It is the file that was read, unchanged: remove it.
    Remove,
    /// It is gone already: record it as removed.
    AlreadyGone,
    /// It is not the file that was read (rewritten, replaced, or a link now): keep it; the scan
    /// sees the change and uploads it again.
    Keep(&'static str),
}

/// Whether the file at a path may be removed: only when it is the very file read for the
/// verified object, by inode, size and modification time.
pub fn may_remove(read: LocalIdentity, size: u64, mtime_ns: i64, now: OnDisk) -> Removal {
    match now {
        OnDisk::Gone => Removal::AlreadyGone,
        OnDisk::NotAFile => Removal::Keep("it is no longer a regular file"),
        OnDisk::File { identity, .. } if identity != read => {
            Removal::Keep("another file is at its path now (another inode)")
        }
        OnDisk::File {
            size: s,
            mtime_ns: m,
            ..
        } if s != size || m != mtime_ns => Removal::Keep("it changed since it was read"),
        OnDisk::File { .. } => Removal::Remove,
    }
}

/// A scan (or resync) that would prune more than this many objects of a job prunes nothing
/// until confirmed.
pub const PRUNE_CONFIRM_ABOVE: u64 = 1000;

/// Why a batch of prunes waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PruneHold {
    /// The last scan could not read all of the folder: what it did not see is not gone.
    WalkError,
    /// More than [`PRUNE_CONFIRM_ABOVE`] objects, or more than half of the job's: a folder that
    /// was emptied, or a mount that is missing, looks like this. A person confirms.
    TooMany { prunes: u64, objects: u64 },
}

impl fmt::Display for PruneHold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PruneHold::WalkError => f.write_str(
                "the last scan could not read all of the source folder; nothing is pruned until it can",
            ),
            PruneHold::TooMany { prunes, objects } => write!(
                f,
                "{prunes} of the job's {objects} objects would be pruned, more than {}; nothing is pruned until POST /uploads/{{id}}/prune confirms this batch",
                if *prunes > PRUNE_CONFIRM_ABOVE {
                    format!("{PRUNE_CONFIRM_ABOVE}")
                } else {
                    "half".to_owned()
                }
            ),
        }
    }
}

/// The guard: whether `prunes` objects (of a job that has `objects`, the prunes counted) may be
/// deleted now. None: they may.
pub fn prune_guard(prunes: u64, objects: u64, walk_error: bool) -> Option<PruneHold> {
    if prunes == 0 {
        return None;
    }
    if walk_error {
        return Some(PruneHold::WalkError);
    }
    if prunes > PRUNE_CONFIRM_ABOVE || prunes.saturating_mul(2) > objects {
        return Some(PruneHold::TooMany { prunes, objects });
    }
    None
}

/// An object as a listing of the bucket shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub size: u64,
    pub etag: Option<String>,
}

/// How an object ferry uploaded differs from what it recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drift {
    /// Not in the bucket.
    Missing,
    /// Another size or ETag: overwritten behind ferry's back.
    Changed,
}

/// Compares an uploaded object's record with its listing. An ETag is compared without its
/// quotes and case; a record or listing without one compares the size alone. So do ETags of
/// two forms (a multipart `…-N` against a plain one) unless `forms_kept`: some stores answer a
/// completed multipart upload with S3's form and list the object with the MD5 of its whole
/// bytes (rclone serve s3), where such a pair says nothing of the bytes; on a store whose
/// listings show multipart ETags, it is an overwrite.
pub fn drift(
    recorded_size: u64,
    recorded_etag: Option<&str>,
    listed: Option<&Listed>,
    forms_kept: bool,
) -> Option<Drift> {
    let Some(listed) = listed else {
        return Some(Drift::Missing);
    };
    if listed.size != recorded_size {
        return Some(Drift::Changed);
    }
    match (recorded_etag, listed.etag.as_deref()) {
        (Some(a), Some(b)) => {
            let (a, b) = (normal_etag(a), normal_etag(b));
            (a != b && (forms_kept || a.contains('-') == b.contains('-'))).then_some(Drift::Changed)
        }
        _ => None,
    }
}

fn normal_etag(etag: &str) -> String {
    etag.trim().trim_matches('"').to_ascii_lowercase()
}

/// What a resync found, for the `InSync` condition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResyncReport {
    /// Objects listed under the job's prefix.
    pub listed: u64,
    /// Uploaded objects not in the bucket, put back in the queue.
    pub missing: u64,
    /// Uploaded objects of another size or ETag, put back in the queue.
    pub changed: u64,
    /// Drifted objects whose local file ferry removed (after_upload: delete): nothing to send.
    pub unrepairable: u64,
    /// Objects under the prefix that ferry does not track.
    pub untracked: u64,
    /// Of those, queued for prune (prune on).
    pub prune_queued: u64,
}

impl ResyncReport {
    pub fn in_sync(&self) -> bool {
        self.missing == 0 && self.changed == 0 && self.unrepairable == 0
    }

    /// One line for the condition's message.
    pub fn summary(&self) -> String {
        let mut s = format!("{} objects listed", self.listed);
        if self.in_sync() {
            s.push_str(", every uploaded object as recorded");
        } else {
            if self.missing + self.changed > 0 {
                s.push_str(&format!(
                    ", {} missing and {} changed behind ferry's back, uploaded again",
                    self.missing, self.changed
                ));
            }
            if self.unrepairable > 0 {
                s.push_str(&format!(
                    ", {} missing or changed whose local files were removed after upload (cannot be repaired)",
                    self.unrepairable
                ));
            }
        }
        if self.untracked > 0 {
            if self.prune_queued > 0 {
                s.push_str(&format!(
                    "; {} objects not ferry's, {} queued for prune",
                    self.untracked, self.prune_queued
                ));
            } else {
                s.push_str(&format!(
                    "; {} objects not ferry's, left alone",
                    self.untracked
                ));
            }
        }
        s
    }
}

/// A condition about a job's lifecycle; `status` None is Kubernetes' "Unknown".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleCondition {
    pub kind: &'static str,
    pub status: Option<bool>,
    pub reason: &'static str,
    pub message: String,
}

/// What the last resync of a job found, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastResync<'a> {
    pub at: &'a str,
    pub in_sync: bool,
    pub message: &'a str,
}

/// The conditions of a job's prunes (when it prunes) and of its last resync.
pub fn lifecycle_conditions(
    prune: bool,
    prune_hold: Option<&str>,
    held: u64,
    walk_error: bool,
    resync: Option<LastResync<'_>>,
) -> Vec<LifecycleCondition> {
    let mut out = Vec::new();
    if prune {
        out.push(match prune_hold {
            Some(hold) => LifecycleCondition {
                kind: "PruneHeld",
                status: Some(true),
                reason: if walk_error { "WalkError" } else { "TooMany" },
                message: hold.to_owned(),
            },
            // Queued by a scan still going: the guard judges them at its end.
            None if held > 0 => LifecycleCondition {
                kind: "PruneHeld",
                status: Some(true),
                reason: "ScanInProgress",
                message: format!("{held} objects wait for the guard at the end of the scan"),
            },
            None => LifecycleCondition {
                kind: "PruneHeld",
                status: Some(false),
                reason: "NoneHeld",
                message: String::new(),
            },
        });
    }
    out.push(match resync {
        None => LifecycleCondition {
            kind: "InSync",
            status: None,
            reason: "NotResynced",
            message: "no resync yet: one comes every FERRY_RESYNC_INTERVAL, or on POST /uploads/{id}/resync".into(),
        },
        Some(r) => LifecycleCondition {
            kind: "InSync",
            status: Some(r.in_sync),
            reason: if r.in_sync { "Resynced" } else { "Drifted" },
            message: format!("resync at {}: {}", r.at, r.message),
        },
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: LocalIdentity = LocalIdentity { dev: 1, ino: 7 };

    fn file(ino: u64, size: u64, mtime_ns: i64) -> OnDisk {
        OnDisk::File {
            identity: LocalIdentity { dev: 1, ino },
            size,
            mtime_ns,
        }
    }

    #[test]
    fn only_the_very_file_read_is_removed() {
        assert_eq!(may_remove(ID, 10, 5, file(7, 10, 5)), Removal::Remove);
        assert_eq!(may_remove(ID, 10, 5, OnDisk::Gone), Removal::AlreadyGone);
        assert!(matches!(
            may_remove(ID, 10, 5, file(8, 10, 5)),
            Removal::Keep(_)
        ));
        assert!(matches!(
            may_remove(ID, 10, 5, file(7, 11, 5)),
            Removal::Keep(_)
        ));
        assert!(matches!(
            may_remove(ID, 10, 5, file(7, 10, 6)),
            Removal::Keep(_)
        ));
        assert!(matches!(
            may_remove(ID, 10, 5, OnDisk::NotAFile),
            Removal::Keep(_)
        ));
    }

    #[test]
    fn identities_round_trip() {
        assert_eq!(LocalIdentity::parse(&ID.to_string()), Some(ID));
        assert_eq!(LocalIdentity::parse("7"), None);
        assert_eq!(LocalIdentity::parse("a:b"), None);
    }

    #[test]
    fn after_upload_is_keep_or_delete() {
        assert_eq!(AfterUpload::parse(None), Ok(AfterUpload::Keep));
        assert_eq!(AfterUpload::parse(Some("delete")), Ok(AfterUpload::Delete));
        assert!(
            AfterUpload::parse(Some("move"))
                .unwrap_err()
                .contains("keep")
        );
    }

    #[test]
    fn the_guard_holds_a_walk_error_half_or_a_thousand() {
        assert_eq!(prune_guard(0, 0, true), None);
        assert_eq!(prune_guard(1, 5, false), None);
        // Exactly half may go; more than half may not.
        assert_eq!(prune_guard(1, 2, false), None);
        assert_eq!(
            prune_guard(2, 3, false),
            Some(PruneHold::TooMany {
                prunes: 2,
                objects: 3
            })
        );
        // An emptied folder.
        assert!(prune_guard(5, 5, false).is_some());
        assert_eq!(prune_guard(1000, 10_000, false), None);
        assert!(prune_guard(1001, 10_000, false).is_some());
        assert_eq!(prune_guard(1, 100, true), Some(PruneHold::WalkError));
        assert!(
            PruneHold::TooMany {
                prunes: 5,
                objects: 5
            }
            .to_string()
            .contains("half")
        );
    }

    #[test]
    fn drift_is_a_missing_object_or_another_size_or_etag() {
        let listed = |size, etag: &str| Listed {
            size,
            etag: Some(etag.to_owned()),
        };
        assert_eq!(drift(3, Some("\"abc\""), None, true), Some(Drift::Missing));
        assert_eq!(
            drift(3, Some("\"abc\""), Some(&listed(3, "ABC")), true),
            None
        );
        assert_eq!(
            drift(3, Some("abc"), Some(&listed(3, "abd")), false),
            Some(Drift::Changed)
        );
        assert_eq!(
            drift(3, Some("abc"), Some(&listed(4, "abc")), false),
            Some(Drift::Changed)
        );
        // No ETag recorded: the size decides.
        assert_eq!(drift(3, None, Some(&listed(3, "x")), true), None);
        // A multipart ETag against a whole-object MD5 of the same size: the forms differ.
        assert_eq!(
            drift(3, Some("\"abc-2\""), Some(&listed(3, "def")), false),
            None
        );
        // Where listings show multipart ETags, it is an overwrite.
        assert_eq!(
            drift(3, Some("\"abc-2\""), Some(&listed(3, "def")), true),
            Some(Drift::Changed)
        );
        assert_eq!(
            drift(3, Some("abc-2"), Some(&listed(3, "abd-2")), false),
            Some(Drift::Changed)
        );
    }

    #[test]
    fn conditions_say_what_the_guard_holds_and_what_the_resync_found() {
        let c = lifecycle_conditions(true, Some("5 of 5"), 5, false, None);
        assert_eq!(
            (c[0].kind, c[0].status, c[0].reason),
            ("PruneHeld", Some(true), "TooMany")
        );
        assert_eq!((c[1].kind, c[1].status), ("InSync", None));
        let last = LastResync {
            at: "2026-12-02T00:00:00Z",
            in_sync: false,
            message: "1 missing",
        };
        let c = lifecycle_conditions(false, None, 0, false, Some(last));
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].status, c[0].reason), (Some(false), "Drifted"));
        assert!(c[0].message.contains("2026-12-02T00:00:00Z"));
        let c = lifecycle_conditions(true, Some("walk"), 1, true, None);
        assert_eq!(c[0].reason, "WalkError");
        let c = lifecycle_conditions(true, None, 2, false, None);
        assert_eq!((c[0].status, c[0].reason), (Some(true), "ScanInProgress"));
        let c = lifecycle_conditions(true, None, 0, false, None);
        assert_eq!((c[0].status, c[0].reason), (Some(false), "NoneHeld"));
    }

    #[test]
    fn a_report_says_what_it_found() {
        let r = ResyncReport {
            listed: 10,
            missing: 1,
            changed: 1,
            untracked: 2,
            ..Default::default()
        };
        assert!(!r.in_sync());
        let s = r.summary();
        assert!(s.contains("1 missing and 1 changed"), "{s}");
        assert!(s.contains("left alone"), "{s}");
        assert!(ResyncReport::default().in_sync());
    }
}
