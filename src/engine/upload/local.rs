//! The file on disk: where a tracked file is (resolved again, under the symlink policy), whether
//! it is still the version claimed, and its bytes, read whole or part by part, and checked to be
//! as many as its size says.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::{UploadError, read_error};
use crate::core::checksum::ChecksumMode;
use crate::core::lifecycle::LocalIdentity;
use crate::core::spec::SymlinkPolicy;
use crate::scan::file_version;

/// Where a tracked file lives on disk.
pub fn local_path(source_folder: &Path, relative: &str) -> PathBuf {
    relative
        .split('/')
        .fold(source_folder.to_path_buf(), |p, c| p.join(c))
}

/// The real path of a job's file, if the symlink policy lets ferry read it; None when it is
/// gone or leads where it may not (for the scan, the same as gone). Blocking.
pub(super) fn resolve_source(
    source_folder: &Path,
    relative: &str,
    links: SymlinkPolicy,
) -> Result<Option<PathBuf>, UploadError> {
    let path = local_path(source_folder, relative);
    let both = std::fs::canonicalize(source_folder)
        .and_then(|root| std::fs::canonicalize(&path).map(|resolved| (root, resolved)));
    let (root, resolved) = match both {
        Ok(both) => both,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(read_error(&path, source)),
    };
    if links.allows(&root, relative, &resolved) {
        Ok(Some(resolved))
    } else {
        tracing::warn!(
            resolved = %resolved.display(),
            "the file is now a symbolic link that FERRY_FOLLOW_SYMLINKS does not allow; not uploading it"
        );
        Ok(None)
    }
}

/// A claimed file, as found on disk.
pub(super) enum Local {
    /// Gone, changed, or now a link the policy refuses: not the version claimed.
    Changed(Option<(u64, i64)>),
    /// A small file, read whole, and still the version claimed after the read, with its checksum
    /// (FERRY_CHECKSUM's algorithm) computed while the bytes were in the cache.
    Whole(Bytes, Option<String>, LocalIdentity),
    /// A large file, open for reading part by part.
    Open(PathBuf, std::fs::File, LocalIdentity),
}

/// Which file an open one is (device and inode): the only one `after_upload: delete` may remove.
pub fn identity_of(meta: &std::fs::Metadata) -> LocalIdentity {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        LocalIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        LocalIdentity { dev: 0, ino: 0 }
    }
}

/// Resolves, checks and opens a claimed file. With `whole` (the checksum mode) a small file is
/// also read whole and checksummed, in the same trip to the blocking pool. Blocking.
///
/// Resolved again here, not trusted from the scan: a file swapped for a link since must not lead
/// ferry out of the folder.
pub(super) fn open_local(
    source_folder: &Path,
    relative: &str,
    links: SymlinkPolicy,
    claimed: (u64, i64),
    whole: Option<ChecksumMode>,
) -> Result<Local, UploadError> {
    let Some(path) = resolve_source(source_folder, relative, links)? else {
        return Ok(Local::Changed(None));
    };
    let version = |path: &Path| match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(Some(file_version(&meta))),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(read_error(path, e)),
    };
    let now = version(&path)?;
    if now != Some(claimed) {
        return Ok(Local::Changed(now));
    }
    let mut f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Local::Changed(None)),
        Err(e) => return Err(read_error(&path, e)),
    };
    // The identity of the file opened, so that the bytes read are the ones of that file.
    let identity = match f.metadata() {
        Ok(meta) => identity_of(&meta),
        Err(e) => return Err(read_error(&path, e)),
    };
    let Some(mode) = whole else {
        return Ok(Local::Open(path, f, identity));
    };
    let len =
        usize::try_from(claimed.0).map_err(|e| read_error(&path, std::io::Error::other(e)))?;
    let mut buf = vec![0u8; len];
    let read = read_all_of(&mut f, &mut buf, claimed.0);
    // The bytes read must be the version claimed from start to end.
    let now = version(&path)?;
    if now != Some(claimed) {
        return Ok(Local::Changed(now));
    }
    read.map_err(|e| read_error(&path, e))?;
    let checksum = mode.of(&buf);
    Ok(Local::Whole(Bytes::from(buf), checksum, identity))
}

/// The error of a file whose bytes are not as many as its size says: a file of /proc or /sys
/// (stat says 0 or 4096, reading gives something else), or a file system that lies. Such bytes
/// are not the file, and no attempt will make them so.
pub(super) fn size_mismatch(stat: u64, what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!(
            "its size is {stat} bytes but reading it gave {what}; a special file (such as one under /proc) cannot be uploaded"
        ),
    )
}

/// Fills `buf` (the file's whole size) and checks that the file ends there.
pub(super) fn read_all_of(f: &mut std::fs::File, buf: &mut [u8], stat: u64) -> std::io::Result<()> {
    use std::io::Read;
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..]) {
            Ok(0) => return Err(size_mismatch(stat, &format!("{filled} bytes"))),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    at_end(f, stat)
}

/// Checks that nothing follows the bytes read: a file that goes on past its size is not that size.
pub(super) fn at_end(mut f: impl std::io::Read, stat: u64) -> std::io::Result<()> {
    let mut probe = [0u8; 1];
    loop {
        match f.read(&mut probe) {
            Ok(0) => return Ok(()),
            Ok(_) => return Err(size_mismatch(stat, "more bytes")),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The file's size and mtime now; None when it is gone.
pub(super) async fn current_version(path: &Path) -> std::io::Result<Option<(u64, i64)>> {
    match tokio::fs::metadata(path).await {
        Ok(meta) if meta.is_file() => Ok(Some(file_version(&meta))),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// A part as read from disk, with the checksum sent with it.
pub(super) struct ReadPart {
    pub(super) data: Bytes,
    pub(super) checksum: Option<String>,
}

/// Reads a part and computes its checksum in one trip to the blocking pool, while the bytes are
/// still in the cache.
pub(super) async fn read_part(
    reader: Arc<std::fs::File>,
    stat: u64,
    offset: u64,
    len: u64,
    mode: ChecksumMode,
    mut buf: Vec<u8>,
) -> std::io::Result<ReadPart> {
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Seek};
        let len = usize::try_from(len).map_err(std::io::Error::other)?;
        let mut file = &*reader;
        file.seek(SeekFrom::Start(offset))?;
        // read_to_end fills the spare capacity without zeroing it first.
        buf.clear();
        buf.reserve_exact(len);
        file.take(len as u64).read_to_end(&mut buf)?;
        if buf.len() != len {
            return Err(size_mismatch(
                stat,
                &format!("{} bytes", offset as usize + buf.len()),
            ));
        }
        if offset + len as u64 == stat {
            at_end(file, stat)?;
        }
        let checksum = mode.of(&buf);
        Ok(ReadPart {
            data: Bytes::from(buf),
            checksum,
        })
    })
    .await
    .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_is_read_only_where_the_symlink_policy_allows() {
        let base = tempfile::tempdir().unwrap();
        let src = base.path().join("src");
        std::fs::create_dir_all(src.join("real")).unwrap();
        std::fs::write(src.join("real/data.txt"), b"data").unwrap();
        std::fs::write(base.path().join("secret.txt"), b"secret").unwrap();
        std::os::unix::fs::symlink(src.join("real/data.txt"), src.join("alias.txt")).unwrap();
        std::os::unix::fs::symlink(base.path().join("secret.txt"), src.join("out.txt")).unwrap();
        std::os::unix::fs::symlink(base.path(), src.join("up")).unwrap();
        let resolve = |rel: &'static str, links| {
            let src = src.clone();
            async move { resolve_source(&src, rel, links).unwrap() }
        };
        let real = std::fs::canonicalize(src.join("real/data.txt")).unwrap();
        for links in [SymlinkPolicy::Never, SymlinkPolicy::Inside] {
            assert_eq!(resolve("real/data.txt", links).await, Some(real.clone()));
            assert_eq!(resolve("out.txt", links).await, None);
            assert_eq!(resolve("up/secret.txt", links).await, None);
            assert_eq!(resolve("missing.txt", links).await, None);
        }
        assert_eq!(resolve("alias.txt", SymlinkPolicy::Never).await, None);
        assert_eq!(
            resolve("alias.txt", SymlinkPolicy::Inside).await,
            Some(real)
        );
    }
}
