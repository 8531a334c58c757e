//! States of jobs and files, and how a job's status follows from its files.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// A job's state, as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    /// Created; its folder has not been scanned yet.
    Pending,
    /// Files remain to upload.
    InProgress,
    /// Every matching file is in S3.
    Completed,
    /// Nothing is left to try and something failed (a file, or the job itself: missing bucket).
    Failed,
}

/// A tracked file's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FileState {
    Pending,
    InProgress,
    Uploaded,
    Failed,
}

macro_rules! string_enum {
    ($ty:ident { $($variant:ident => $s:literal),+ $(,)? }) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $s),+ }
            }
        }
        impl FromStr for $ty {
            type Err = UnknownState;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s { $($s => Ok($ty::$variant),)+ _ => Err(UnknownState(s.to_owned())) }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

string_enum!(JobState { Pending => "PENDING", InProgress => "IN_PROGRESS", Completed => "COMPLETED", Failed => "FAILED" });
string_enum!(FileState { Pending => "PENDING", InProgress => "IN_PROGRESS", Uploaded => "UPLOADED", Failed => "FAILED" });

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown state {0:?}")]
pub struct UnknownState(pub String);

/// The files of one state: how many, how many bytes they hold, how many of those are in S3.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateTally {
    pub files: u64,
    pub bytes: u64,
    pub bytes_sent: u64,
}

/// A job's files, by state: what its status is derived from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileTally {
    pub pending: StateTally,
    pub in_progress: StateTally,
    pub uploaded: StateTally,
    pub failed: StateTally,
}

impl FileTally {
    pub fn add(&mut self, state: FileState, tally: StateTally) {
        let slot = match state {
            FileState::Pending => &mut self.pending,
            FileState::InProgress => &mut self.in_progress,
            FileState::Uploaded => &mut self.uploaded,
            FileState::Failed => &mut self.failed,
        };
        slot.files += tally.files;
        slot.bytes += tally.bytes;
        slot.bytes_sent += tally.bytes_sent;
    }

    /// The files of one state.
    pub fn of(&self, state: FileState) -> &StateTally {
        match state {
            FileState::Pending => &self.pending,
            FileState::InProgress => &self.in_progress,
            FileState::Uploaded => &self.uploaded,
            FileState::Failed => &self.failed,
        }
    }

    pub fn total_files(&self) -> u64 {
        self.pending.files + self.in_progress.files + self.uploaded.files + self.failed.files
    }

    pub fn total_bytes(&self) -> u64 {
        self.pending.bytes + self.in_progress.bytes + self.uploaded.bytes + self.failed.bytes
    }

    /// Bytes known to be in S3: whole uploaded files, and the parts acknowledged of files not
    /// yet complete, uploading or waiting (a restart, a retry after an outage: their parts are
    /// still in S3 and are resumed, so the count never goes back for them).
    pub fn bytes_sent(&self) -> u64 {
        self.uploaded.bytes
            + self.in_progress.bytes_sent.min(self.in_progress.bytes)
            + self.pending.bytes_sent.min(self.pending.bytes)
    }

    /// Files that still have work to do.
    pub fn active_files(&self) -> u64 {
        self.pending.files + self.in_progress.files
    }
}

/// Why a whole job cannot go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocker {
    /// The source folder is missing, not a folder, or unreadable.
    SourceFolderUnavailable,
    /// The bucket is missing or refuses these credentials.
    BucketUnavailable,
    /// The stored spec no longer validates.
    InvalidSpec,
}

string_enum!(Blocker { SourceFolderUnavailable => "SourceFolderUnavailable", BucketUnavailable => "BucketUnavailable", InvalidSpec => "InvalidSpec" });

/// A condition of a job's status, Kubernetes-style: a type, whether it holds, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub kind: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

/// The conditions a person reads first: is the job reconciled, can it read its folder and
/// write its bucket, are files failing, is everything uploaded.
///
/// `walk_error` is what the last scan could not read under the folder (the folders and their
/// errors): the folder is then not readable, whole, even though the job is not blocked.
pub fn conditions(
    blocker: Option<(Blocker, &str)>,
    walk_error: Option<&str>,
    generation: i64,
    observed_generation: i64,
    files: &FileTally,
    state: JobState,
) -> Vec<Condition> {
    let blocked = |b: Blocker, kind: &'static str, ok: &'static str| match blocker {
        Some((found, message)) if found == b => Condition {
            kind,
            status: false,
            reason: b.as_str(),
            message: message.to_owned(),
        },
        _ => Condition {
            kind,
            status: true,
            reason: ok,
            message: String::new(),
        },
    };
    let folder = match (blocker, walk_error) {
        (Some((Blocker::SourceFolderUnavailable, _)), _) | (_, None) => blocked(
            Blocker::SourceFolderUnavailable,
            "SourceFolderReadable",
            "FolderReadable",
        ),
        (_, Some(unread)) => Condition {
            kind: "SourceFolderReadable",
            status: false,
            reason: "PartlyUnreadable",
            message: format!(
                "the last scan could not read part of the folder, so the job cannot be complete \
                 (its files there stay as recorded, and every scan tries again): {unread}"
            ),
        },
    };
    let reconciled = observed_generation >= generation;
    vec![
        Condition {
            kind: "Reconciled",
            status: reconciled,
            reason: if reconciled {
                "ScanDone"
            } else {
                "ScanPending"
            },
            message: format!("generation {observed_generation} of {generation} scanned"),
        },
        folder,
        blocked(
            Blocker::BucketUnavailable,
            "BucketWritable",
            "BucketWritable",
        ),
        Condition {
            kind: "FilesFailing",
            status: files.failed.files > 0,
            reason: if files.failed.files > 0 {
                "FilesFailed"
            } else {
                "NoneFailed"
            },
            message: format!("{} files failed", files.failed.files),
        },
        Condition {
            kind: "Completed",
            status: state == JobState::Completed,
            reason: match state {
                JobState::Completed => "AllUploaded",
                JobState::InProgress => "Uploading",
                JobState::Pending => "NotScanned",
                JobState::Failed => "Failed",
            },
            message: format!(
                "{} of {} files uploaded",
                files.uploaded.files,
                files.total_files()
            ),
        },
    ]
}

/// What the job itself knows beyond its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobFacts {
    /// The folder has been scanned at least once.
    pub scanned: bool,
    /// A problem that stops the whole job (missing bucket, missing folder).
    pub blocked: bool,
    /// The last scan could not read part of the folder: files may be missing from the job.
    pub walk_incomplete: bool,
}

/// A job's state, derived from its facts and its files.
///
/// COMPLETED only when every file under the folder was read: a walk that could not read part of
/// it ends the job FAILED once the rest is uploaded, never COMPLETED.
pub fn job_state(facts: JobFacts, files: &FileTally) -> JobState {
    if facts.blocked {
        JobState::Failed
    } else if !facts.scanned {
        JobState::Pending
    } else if files.active_files() > 0 {
        JobState::InProgress
    } else if files.failed.files > 0 || facts.walk_incomplete {
        JobState::Failed
    } else {
        JobState::Completed
    }
}

/// Byte-weighted progress in 0.0..=1.0; exactly 1.0 when, and only when, the job is COMPLETED.
pub fn progress(state: JobState, files: &FileTally) -> f64 {
    if state == JobState::Completed {
        return 1.0;
    }
    let (done, total) = if files.total_bytes() > 0 {
        (files.bytes_sent(), files.total_bytes())
    } else {
        // Only empty files: count them instead.
        (files.uploaded.files, files.total_files())
    };
    if total == 0 {
        return 0.0;
    }
    // Not complete, so never shown as 1.0 (a last file may have all its bytes and no answer yet).
    (done as f64 / total as f64).clamp(0.0, 0.9999)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(files: u64, bytes: u64, bytes_sent: u64) -> StateTally {
        StateTally {
            files,
            bytes,
            bytes_sent,
        }
    }

    const SCANNED: JobFacts = JobFacts {
        scanned: true,
        blocked: false,
        walk_incomplete: false,
    };

    #[test]
    fn states_round_trip_through_strings() {
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>(), Ok(*s));
        }
        for s in FileState::ALL {
            assert_eq!(s.as_str().parse::<FileState>(), Ok(*s));
        }
        assert!("DONE".parse::<FileState>().is_err());
    }

    #[test]
    fn an_unscanned_job_is_pending_and_a_blocked_one_failed() {
        let files = FileTally::default();
        let facts = JobFacts {
            scanned: false,
            blocked: false,
            walk_incomplete: false,
        };
        assert_eq!(job_state(facts, &files), JobState::Pending);
        let facts = JobFacts {
            scanned: true,
            blocked: true,
            walk_incomplete: false,
        };
        assert_eq!(job_state(facts, &files), JobState::Failed);
    }

    #[test]
    fn an_empty_match_is_completed_at_one() {
        let files = FileTally::default();
        let state = job_state(SCANNED, &files);
        assert_eq!(state, JobState::Completed);
        assert_eq!(progress(state, &files), 1.0);
    }

    #[test]
    fn work_left_means_in_progress_and_failures_fail_only_at_the_end() {
        let mut files = FileTally::default();
        files.add(FileState::Failed, tally(1, 10, 0));
        files.add(FileState::Pending, tally(1, 10, 0));
        assert_eq!(job_state(SCANNED, &files), JobState::InProgress);
        let mut files = FileTally::default();
        files.add(FileState::Failed, tally(1, 10, 0));
        files.add(FileState::Uploaded, tally(1, 10, 10));
        assert_eq!(job_state(SCANNED, &files), JobState::Failed);
    }

    #[test]
    fn conditions_say_what_holds_and_why() {
        let mut files = FileTally::default();
        files.add(FileState::Failed, tally(2, 10, 0));
        let c = conditions(
            Some((Blocker::BucketUnavailable, "bucket \"b\" does not exist")),
            None,
            2,
            1,
            &files,
            JobState::Failed,
        );
        let get = |kind: &str| c.iter().find(|c| c.kind == kind).unwrap().clone();
        assert!(!get("Reconciled").status);
        assert!(get("SourceFolderReadable").status);
        let bucket = get("BucketWritable");
        assert!(!bucket.status);
        assert_eq!(bucket.reason, "BucketUnavailable");
        assert!(bucket.message.contains("does not exist"));
        assert!(get("FilesFailing").status);
        assert_eq!(get("FilesFailing").message, "2 files failed");
        assert!(!get("Completed").status);
        let ok = conditions(None, None, 1, 1, &FileTally::default(), JobState::Completed);
        assert!(ok.iter().all(|c| c.status != (c.kind == "FilesFailing")));
    }

    #[test]
    fn a_folder_read_in_part_is_never_completed_and_says_where() {
        let mut files = FileTally::default();
        files.add(FileState::Uploaded, tally(3, 30, 30));
        let facts = JobFacts {
            walk_incomplete: true,
            ..SCANNED
        };
        let state = job_state(facts, &files);
        assert_eq!(state, JobState::Failed);
        assert!(progress(state, &files) < 1.0);
        files.add(FileState::Pending, tally(1, 10, 0));
        assert_eq!(job_state(facts, &files), JobState::InProgress);
        let unread = "secret: Permission denied (os error 13)";
        let c = conditions(None, Some(unread), 1, 1, &files, JobState::Failed);
        let folder = c.iter().find(|c| c.kind == "SourceFolderReadable").unwrap();
        assert!(!folder.status);
        assert_eq!(folder.reason, "PartlyUnreadable");
        assert!(folder.message.contains(unread), "{}", folder.message);
        assert!(!c.iter().find(|c| c.kind == "Completed").unwrap().status);
    }

    #[test]
    fn progress_is_byte_weighted() {
        let mut files = FileTally::default();
        // A 10 GiB file half sent, and 100 small files done.
        files.add(FileState::InProgress, tally(1, 10 << 30, 5 << 30));
        files.add(FileState::Uploaded, tally(100, 100, 100));
        let state = job_state(SCANNED, &files);
        let p = progress(state, &files);
        assert!((p - 0.5).abs() < 0.001, "{p}");
    }

    #[test]
    fn parts_in_s3_count_while_their_file_waits_to_resume() {
        let mut files = FileTally::default();
        files.add(FileState::Pending, tally(1, 100, 40));
        files.add(FileState::Uploaded, tally(1, 100, 100));
        assert_eq!(files.bytes_sent(), 140);
        let p = progress(job_state(SCANNED, &files), &files);
        assert!((p - 0.7).abs() < 0.001, "{p}");
    }

    #[test]
    fn progress_is_below_one_until_completed() {
        let mut files = FileTally::default();
        files.add(FileState::InProgress, tally(1, 10, 10));
        let state = job_state(SCANNED, &files);
        assert!(progress(state, &files) < 1.0);
        let mut files = FileTally::default();
        files.add(FileState::Uploaded, tally(3, 0, 0));
        let state = job_state(SCANNED, &files);
        assert_eq!(progress(state, &files), 1.0);
        let mut files = FileTally::default();
        files.add(FileState::Uploaded, tally(1, 0, 0));
        files.add(FileState::Pending, tally(1, 0, 0));
        let state = job_state(SCANNED, &files);
        assert_eq!(progress(state, &files), 0.5);
    }
}
