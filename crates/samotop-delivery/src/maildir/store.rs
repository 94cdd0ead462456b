//! The blocking half of Maildir delivery: files and directories, nothing async. Every
//! function here runs on a blocking thread.
//!
//! Syscalls for one copy of a message of k writes: `open(tmp/N)`, k × `write`, `fsync`,
//! `close`, `rename(tmp/N, new/N)`, then `open(new)`, `fsync`, `close`, shared by the
//! commits that wait for it at the same time (see [`super::sync`]). Directories are made
//! only when an `open` or `rename` finds them missing.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::name;
use super::sync::DirSyncs;
use crate::Error;

/// Names tried when a name is already taken (which the name scheme should make impossible).
const NAME_TRIES: usize = 3;

/// One copy of the message in progress: an open file in `dir/tmp/`.
#[derive(Debug)]
pub(crate) struct Copy {
    /// The Maildir.
    pub dir: PathBuf,
    /// The unique name in `tmp/`.
    pub name: String,
    /// The open file.
    pub file: File,
}

impl Copy {
    /// `dir/tmp/name`.
    pub fn tmp_path(&self) -> PathBuf {
        tmp_path(&self.dir, &self.name)
    }
}

fn tmp_path(dir: &Path, name: &str) -> PathBuf {
    let mut p = dir.join("tmp");
    p.push(name);
    p
}

/// Opens one new file in `tmp/` of each Maildir, making missing Maildirs. On error, the
/// files already made are removed.
pub(crate) fn open_all(dirs: &[PathBuf]) -> Result<Vec<Copy>, Error> {
    let mut copies = Vec::with_capacity(dirs.len());
    for dir in dirs {
        match open(dir) {
            Ok(copy) => copies.push(copy),
            Err(e) => {
                remove_copies(copies);
                return Err(e);
            }
        }
    }
    Ok(copies)
}

/// Opens a new file in `dir/tmp/` under a fresh unique name.
fn open(dir: &Path) -> Result<Copy, Error> {
    let mut made = false;
    let mut tries = 0;
    loop {
        let name = name::unique();
        let path = tmp_path(dir, &name);
        match create_new(&path) {
            Ok(file) => {
                return Ok(Copy {
                    dir: dir.to_path_buf(),
                    name,
                    file,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && !made => {
                make_maildir(dir)?;
                made = true;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries + 1 < NAME_TRIES => {
                log::warn!(
                    "maildir: {} exists already, trying another name",
                    path.display()
                );
                tries += 1;
            }
            Err(source) => return Err(Error::CreateFile { path, source }),
        }
    }
}

/// `open(O_CREAT | O_EXCL)`, mode 0600: mail is private.
fn create_new(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Appends `data` to every copy.
pub(crate) fn write_all(copies: &mut [Copy], data: &[u8]) -> Result<(), Error> {
    if data.is_empty() {
        return Ok(());
    }
    for copy in copies {
        copy.file.write_all(data).map_err(|source| Error::Write {
            path: copy.tmp_path(),
            source,
        })?;
    }
    Ok(())
}

/// Finishes every copy: appends `tail`, `fsync`s and closes the file, renames it into
/// `new/`, `fsync`s each `new/` once (shared with concurrent commits through `syncs`). Per
/// copy, in order: the path in `new/`, or the error (and then nothing of that copy is left
/// in `tmp/` or `new/`).
pub(crate) fn deliver(
    syncs: &DirSyncs,
    copies: Vec<Copy>,
    tail: &[u8],
) -> Vec<Result<PathBuf, Error>> {
    // 1. Data on disk, files closed.
    let staged: Vec<Result<(PathBuf, String), Error>> = copies
        .into_iter()
        .map(|mut copy| {
            let path = copy.tmp_path();
            let written = if tail.is_empty() {
                Ok(())
            } else {
                copy.file.write_all(tail).map_err(|source| Error::Write {
                    path: path.clone(),
                    source,
                })
            };
            let synced = written.and_then(|()| {
                copy.file.sync_all().map_err(|source| Error::Sync {
                    path: path.clone(),
                    source,
                })
            });
            drop(copy.file);
            match synced {
                Ok(()) => Ok((copy.dir, copy.name)),
                Err(e) => {
                    remove(&path);
                    Err(e)
                }
            }
        })
        .collect();

    // 2. Into new/: from here on a crash keeps the message.
    let mut moved: Vec<Result<PathBuf, Error>> = staged
        .into_iter()
        .map(|staged| {
            let (dir, name) = staged?;
            move_to_new(&dir, &name).inspect_err(|_| remove(&tmp_path(&dir, &name)))
        })
        .collect();

    // 3. The directory entries on disk: one fsync per distinct new/.
    let mut synced: Vec<PathBuf> = Vec::new();
    for i in 0..moved.len() {
        let Some(new_dir) = moved[i].as_ref().ok().and_then(|p| p.parent()) else {
            continue;
        };
        if synced.iter().any(|d| d == new_dir) {
            continue;
        }
        let new_dir = new_dir.to_path_buf();
        if let Err(e) = syncs.sync(&new_dir) {
            // Whether those entries survive a crash is unknown: take them back.
            for result in moved.iter_mut().skip(i) {
                if let Ok(path) = result {
                    if path.parent() == Some(new_dir.as_path()) {
                        remove(path);
                        *result = Err(Error::Sync {
                            path: new_dir.clone(),
                            source: io::Error::new(e.kind(), e.to_string()),
                        });
                    }
                }
            }
            continue;
        }
        synced.push(new_dir);
    }
    moved
}

/// Renames `dir/tmp/name` to `dir/new/name` without replacing anything there, making
/// `new/` when it is missing.
fn move_to_new(dir: &Path, name: &str) -> Result<PathBuf, Error> {
    let from = tmp_path(dir, name);
    let mut to = dir.join("new").join(name);
    let mut made = false;
    let mut tries = 0;
    loop {
        match rename_noreplace(&from, &to) {
            Ok(()) => return Ok(to),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries + 1 < NAME_TRIES => {
                log::warn!(
                    "maildir: {} exists already, trying another name",
                    to.display()
                );
                to = dir.join("new").join(name::unique());
                tries += 1;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && !made && from.exists() => {
                make_maildir(dir)?;
                made = true;
            }
            Err(source) => return Err(Error::Rename { from, to, source }),
        }
    }
}

/// `renameat2(RENAME_NOREPLACE)` where the kernel and file system have it, else `rename`.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    use rustix::io::Errno;
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => fs::rename(from, to),
        Err(e) => Err(e.into()),
    }
}

/// `rename`: a name taken in `new/` would be replaced, which the name scheme rules out.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)
}

/// `fsync` of a directory, so that the names made in it survive a crash.
fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| Error::Sync {
            path: dir.to_path_buf(),
            source,
        })
}

/// Makes the Maildir `dir` (and its missing parents) with `tmp/`, `new/` and `cur/`, each
/// made directory made durable by an `fsync` of its parent. Mode 0700.
pub(crate) fn make_maildir(dir: &Path) -> Result<(), Error> {
    make_dir(dir, 0)?;
    let mut made = false;
    for sub in ["tmp", "new", "cur"] {
        made |= make_one(&dir.join(sub))?;
    }
    if made {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Makes `dir` and its missing parents, like `create_dir_all`, with an `fsync` of each
/// parent that got a new entry.
fn make_dir(dir: &Path, depth: usize) -> Result<(), Error> {
    let err = |source| Error::CreateDir {
        path: dir.to_path_buf(),
        source,
    };
    match make_one(dir) {
        Ok(false) => return Ok(()),
        Ok(true) => {}
        Err(Error::CreateDir { source, .. })
            if source.kind() == io::ErrorKind::NotFound && depth < 64 =>
        {
            match dir.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => make_dir(parent, depth + 1)?,
                _ => return Err(err(source)),
            }
            if !make_one(dir)? {
                return Ok(());
            }
        }
        Err(e) => return Err(e),
    }
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => sync_dir(Path::new(".")),
    }
}

/// Makes one directory: `Ok(true)` if made, `Ok(false)` if a directory was there.
fn make_one(dir: &Path) -> Result<bool, Error> {
    let mut builder = DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    match builder.create(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(false),
        Err(source) => Err(Error::CreateDir {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// Closes and removes the files of unfinished copies.
/// Removes regular files in `tmp` last modified more than `age` ago; returns how many.
/// Errors (a missing directory, a file gone meanwhile) are not worth more than a skip.
pub(crate) fn clean_tmp(tmp: &Path, age: std::time::Duration) -> usize {
    let Ok(entries) = fs::read_dir(tmp) else {
        return 0;
    };
    let now = std::time::SystemTime::now();
    let mut removed = 0;
    for entry in entries.flatten().take(1_000_000) {
        let Ok(meta) = entry.metadata() else { continue };
        let old = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|elapsed| elapsed > age);
        if meta.is_file() && old && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// The per-recipient mailboxes under `root`: `root/<domain>/<local>/` and `root/<name>/`
/// directories that hold a `new/` (bounded: at most a million are listed).
pub(crate) fn mailboxes(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(top) = fs::read_dir(root) else {
        return found;
    };
    for entry in top.flatten().take(1_000_000) {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if path.join("new").is_dir() {
            found.push(path.clone());
        }
        let Ok(inner) = fs::read_dir(&path) else {
            continue;
        };
        for sub in inner.flatten().take(1_000_000) {
            let sub = sub.path();
            if sub.join("new").is_dir() {
                found.push(sub);
            }
            if found.len() >= 1_000_000 {
                return found;
            }
        }
    }
    found
}

pub(crate) fn remove_copies(copies: Vec<Copy>) {
    for copy in copies {
        let path = copy.tmp_path();
        drop(copy.file);
        remove(&path);
    }
}

/// Removes files, e.g. what an aborted transaction left in `tmp/`.
pub(crate) fn remove_all(paths: &[PathBuf]) {
    for path in paths {
        remove(path);
    }
}

/// Removes a file; a file already gone is fine, anything else is logged.
pub(crate) fn remove(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => log::warn!("maildir: cannot remove {}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    #[test]
    fn clean_tmp_removes_only_stale_files() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        let old = tmp.join("old");
        fs::write(&old, b"x").unwrap();
        let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(40 * 3600);
        fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        fs::write(tmp.join("fresh"), b"y").unwrap();
        assert_eq!(
            clean_tmp(&tmp, std::time::Duration::from_secs(36 * 3600)),
            1
        );
        assert!(!old.exists());
        assert!(tmp.join("fresh").exists());
        assert_eq!(
            clean_tmp(&dir.path().join("missing"), std::time::Duration::ZERO),
            0
        );
    }

    #[test]
    fn makes_missing_maildirs_and_delivers() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("a/b/c");
        let mut copies = open_all(std::slice::from_ref(&dir)).expect("open");
        assert_eq!(names(&dir), ["cur", "new", "tmp"]);
        write_all(&mut copies, b"Hello ").expect("write");
        let name = copies[0].name.clone();
        let results = deliver(&DirSyncs::default(), copies, b"world\r\n");
        let path = results[0].as_ref().expect("delivered");
        assert_eq!(path, &dir.join("new").join(&name));
        assert_eq!(fs::read(path).expect("read"), b"Hello world\r\n");
        assert!(names(&dir.join("tmp")).is_empty());
    }

    #[test]
    fn a_file_in_the_way_is_an_error_and_leaves_nothing() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().to_path_buf();
        fs::create_dir(dir.join("tmp")).expect("tmp");
        fs::write(dir.join("new"), b"not a directory").expect("new");
        let copies = open_all(std::slice::from_ref(&dir)).expect("open");
        let results = deliver(&DirSyncs::default(), copies, b"x");
        assert!(
            matches!(results[0], Err(Error::Rename { .. })),
            "{results:?}"
        );
        assert!(names(&dir.join("tmp")).is_empty());
    }

    #[test]
    fn an_open_failure_removes_the_copies_made() {
        let root = tempfile::tempdir().expect("tempdir");
        let good = root.path().join("good");
        let blocked = root.path().join("file");
        fs::write(&blocked, b"x").expect("file");
        let err = open_all(&[good.clone(), blocked.join("sub")]).expect_err("must fail");
        assert!(
            matches!(err, Error::CreateDir { .. } | Error::CreateFile { .. }),
            "{err}"
        );
        assert!(names(&good.join("tmp")).is_empty());
    }
}
