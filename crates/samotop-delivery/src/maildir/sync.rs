//! Directory `fsync`s shared between concurrent commits (group commit).
//!
//! A commit renames its file into `new/`, then needs an `fsync` of `new/` that *starts after*
//! the rename: that one makes the entry durable. When many sessions commit at once, one
//! `fsync` serves every rename that happened before it started, so the commits that arrive
//! while it runs wait for the next one and share it, instead of each queueing its own
//! write of the same directory block. Under load this turns one directory write per message
//! into one per batch; alone, a commit costs exactly what it did (one `open`, one `fsync`).
//!
//! The directory is opened afresh for each `fsync`, by path: a handle kept open would go on
//! syncing a directory that was removed and made again under the same name.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

/// The shared `fsync`s of the directories one [`Maildir`](super::Maildir) writes into.
#[derive(Debug, Default)]
pub(crate) struct DirSyncs {
    /// Directories with a commit in progress; an entry goes when its last user leaves.
    dirs: Mutex<HashMap<PathBuf, Arc<DirSync>>>,
}

/// One directory's group commit.
#[derive(Debug, Default)]
struct DirSync {
    state: Mutex<State>,
    finished: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Number of the last `fsync` started; they run one at a time.
    started: u64,
    /// Number of the last `fsync` finished.
    finished: u64,
    /// An `fsync` is running.
    running: bool,
    /// The last `fsync` that failed: its number and error.
    failed: Option<(u64, io::ErrorKind, String)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl DirSyncs {
    /// Returns once an `fsync` of `dir` that started after this call began has finished, so
    /// that every entry made in `dir` before the call is on disk. Blocking. An error of the
    /// `fsync` that served this call (or of one that ran while the entries were being made)
    /// is returned to every caller it may concern.
    pub(crate) fn sync(&self, dir: &Path) -> io::Result<()> {
        let entry = lock(&self.dirs)
            .entry(dir.to_path_buf())
            .or_default()
            .clone();
        let result = entry.sync(dir);
        let mut dirs = lock(&self.dirs);
        // The map's and ours: nobody else is using it.
        if Arc::strong_count(&entry) == 2 {
            dirs.remove(dir);
        }
        result
    }
}

impl DirSync {
    fn sync(&self, dir: &Path) -> io::Result<()> {
        let mut state = lock(&self.state);
        // The one running now (if any) may have started before our entries were made: wait
        // for the next one.
        let need = state.started + 1;
        loop {
            if state.finished >= need {
                // Conservative: an `fsync` that failed while our entries were being made
                // may have lost them, so a failure from `need - 1` on is ours too.
                return match &state.failed {
                    Some((n, kind, text)) if *n + 1 >= need => {
                        Err(io::Error::new(*kind, text.clone()))
                    }
                    _ => Ok(()),
                };
            }
            if state.running {
                state = self
                    .finished
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            // Lead: run the next one for everybody waiting.
            state.running = true;
            state.started += 1;
            let number = state.started;
            drop(state);
            let result = File::open(dir).and_then(|d| d.sync_all());
            state = lock(&self.state);
            state.running = false;
            state.finished = number;
            if let Err(e) = &result {
                state.failed = Some((number, e.kind(), e.to_string()));
            }
            self.finished.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn syncs_a_directory_and_forgets_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let syncs = DirSyncs::default();
        syncs.sync(dir.path()).expect("sync");
        syncs.sync(dir.path()).expect("sync again");
        assert!(lock(&syncs.dirs).is_empty(), "no entry is kept");
    }

    #[test]
    fn a_missing_directory_is_an_error_for_its_caller() {
        let dir = tempfile::tempdir().expect("tempdir");
        let syncs = DirSyncs::default();
        let err = syncs.sync(&dir.path().join("gone")).expect_err("must fail");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        // The next caller gets its own fsync, not the old failure.
        syncs.sync(dir.path()).expect("sync");
    }

    #[test]
    fn concurrent_callers_share_fsyncs_and_all_return() {
        let dir = tempfile::tempdir().expect("tempdir");
        let syncs = Arc::new(DirSyncs::default());
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let syncs = syncs.clone();
                let path = dir.path().to_path_buf();
                thread::spawn(move || {
                    for _ in 0..20 {
                        syncs.sync(&path).expect("sync");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert!(lock(&syncs.dirs).is_empty(), "no entry is kept");
    }

    #[test]
    fn a_caller_waits_for_an_fsync_that_starts_after_it() {
        let syncs = DirSync::default();
        // An fsync is running (number 1) when the caller comes: it must not be served by it.
        {
            let mut state = lock(&syncs.state);
            state.started = 1;
            state.running = true;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        thread::scope(|s| {
            let waiter = s.spawn(|| syncs.sync(dir.path()));
            // Time for the waiter to start waiting on number 1; should it come later, it
            // finds number 1 finished and leads number 2 itself: the outcome is the same.
            thread::sleep(std::time::Duration::from_millis(50));
            {
                let mut state = lock(&syncs.state);
                state.running = false;
                state.finished = 1;
            }
            syncs.finished.notify_all();
            waiter
                .join()
                .expect("thread")
                .expect("served by its own fsync");
        });
        let state = lock(&syncs.state);
        assert_eq!(
            (state.started, state.finished),
            (2, 2),
            "a second fsync ran"
        );
    }
}
