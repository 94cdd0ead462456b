//! Finding the few messages a negation leaves, by counting.
//!
//! A search of negations only over the whole store (`-source`) matches the messages that
//! hold none of its words. Where the words are in nearly every message, no index lists the
//! few left: a merge of the store's ids against the words' matches reads the whole store.
//! Counting is cheaper than listing. The ids in a range and the words' matches in it are
//! both counted from indexes, and where the two counts are equal the range holds no answer.
//! [`Complement`] halves the id range, the newer half first, and goes down only into the
//! halves whose counts differ; a range that is small, or dense with answers, is listed.
//!
//! It does no I/O: the store runs each [`Step`] it asks for and reports the result, so the
//! one plan serves SQLite's blocking connection and PostgreSQL's asynchronous one.

/// A range no larger than this is listed, not halved: listing it costs about as much as
/// the two counts of a split.
const LEAF: u64 = 4096;

/// A range where at least one id in this many is an answer is listed, not halved: the
/// listing stops as soon as it has found them.
const DENSE: u64 = 32;

/// At most this many counts: past them, the ranges left are listed. The counts come from
/// one snapshot, so this only bounds the work for answers spread thinly over the store.
const MAX_COUNTS: u32 = 256;

/// What the store is asked to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Count the scope's ids in `lo..=hi` and the words' matches among them, and report
    /// both with [`Complement::counted`].
    Count { lo: i64, hi: i64 },
    /// List the ids in `lo..=hi` that the words do not match, newest first, at most
    /// `limit`, and report how many were found with [`Complement::listed`].
    List { lo: i64, hi: i64, limit: u64 },
    /// Every answer wanted is found, or there are no more.
    Done,
}

/// A range of ids and how many answers it holds.
#[derive(Debug, Clone, Copy)]
struct Span {
    lo: i64,
    hi: i64,
    left: u64,
}

impl Span {
    fn len(&self) -> u64 {
        (self.hi as i128 - self.lo as i128 + 1).clamp(0, u64::MAX as i128) as u64
    }
}

/// The plan that finds the newest `want` answers of a negation, given how many there are.
#[derive(Debug)]
pub(crate) struct Complement {
    /// Ranges still to look in; the newest is last.
    todo: Vec<Span>,
    /// The range being counted, and where its newer half starts.
    counting: Option<(Span, i64)>,
    want: u64,
    found: u64,
    counts: u32,
}

impl Complement {
    /// For ids `lo..=hi` holding `left` answers in all, of which the newest `want` are
    /// wanted.
    pub(crate) fn new(lo: i64, hi: i64, left: u64, want: u64) -> Self {
        let span = Span { lo, hi, left };
        let todo = if left > 0 && want > 0 && lo <= hi {
            vec![span]
        } else {
            Vec::new()
        };
        Complement {
            todo,
            counting: None,
            want,
            found: 0,
            counts: 0,
        }
    }

    /// The next step; [`Step::Done`] once every answer wanted is found.
    pub(crate) fn next(&mut self) -> Step {
        if let Some((span, mid)) = self.counting {
            return Step::Count {
                lo: mid,
                hi: span.hi,
            };
        }
        let Some(span) = self.todo.pop() else {
            return Step::Done;
        };
        if self.found >= self.want {
            self.todo.clear();
            return Step::Done;
        }
        let len = span.len();
        if len <= LEAF || span.left.saturating_mul(DENSE) >= len || self.counts >= MAX_COUNTS {
            return Step::List {
                lo: span.lo,
                hi: span.hi,
                limit: span.left.min(self.want - self.found),
            };
        }
        // lo < mid <= hi: both halves are smaller than the span.
        let mid = span.lo + ((span.hi as i128 - span.lo as i128 + 1) / 2) as i64;
        self.counting = Some((span, mid));
        self.counts += 1;
        Step::Count {
            lo: mid,
            hi: span.hi,
        }
    }

    /// The counts of the [`Step::Count`] just asked for: `ids` in the range, `matches` of
    /// the words among them.
    pub(crate) fn counted(&mut self, ids: u64, matches: u64) {
        let Some((span, mid)) = self.counting.take() else {
            return;
        };
        let newer = ids.saturating_sub(matches).min(span.left);
        let older = span.left - newer;
        if older > 0 {
            self.todo.push(Span {
                lo: span.lo,
                hi: mid - 1,
                left: older,
            });
        }
        if newer > 0 {
            self.todo.push(Span {
                lo: mid,
                hi: span.hi,
                left: newer,
            });
        }
    }

    /// How many ids the [`Step::List`] just asked for found.
    pub(crate) fn listed(&mut self, found: u64) {
        self.found = self.found.saturating_add(found);
        if self.found >= self.want {
            self.todo.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the plan over ids `lo..=hi` where `answer` tells the answers; returns the ids
    /// listed (newest first) and the steps taken.
    fn run(lo: i64, hi: i64, want: u64, answer: impl Fn(i64) -> bool) -> (Vec<i64>, usize) {
        let left = (lo..=hi).filter(|&i| answer(i)).count() as u64;
        let mut plan = Complement::new(lo, hi, left, want);
        let mut out = Vec::new();
        let mut steps = 0;
        loop {
            steps += 1;
            assert!(steps < 10_000, "the plan does not end");
            match plan.next() {
                Step::Done => break,
                Step::Count { lo, hi } => {
                    let ids = (hi - lo + 1) as u64;
                    let matches = (lo..=hi).filter(|&i| !answer(i)).count() as u64;
                    plan.counted(ids, matches);
                }
                Step::List { lo, hi, limit } => {
                    let got: Vec<i64> = (lo..=hi)
                        .rev()
                        .filter(|&i| answer(i))
                        .take(limit as usize)
                        .collect();
                    plan.listed(got.len() as u64);
                    out.extend(got);
                }
            }
        }
        (out, steps)
    }

    #[test]
    fn one_answer_is_found_in_few_steps() {
        let (ids, steps) = run(1, 100_000, 1001, |i| i == 1);
        assert_eq!(ids, vec![1]);
        assert!(steps < 40, "{steps} steps");
        let (ids, _) = run(1, 100_000, 1001, |i| i == 100_000);
        assert_eq!(ids, vec![100_000]);
        let (ids, _) = run(1, 100_000, 1001, |i| i == 50_001);
        assert_eq!(ids, vec![50_001]);
    }

    #[test]
    fn answers_come_newest_first_and_stop_at_want() {
        let answer = |i: i64| i % 7919 == 3;
        let all: Vec<i64> = (1..=100_000).rev().filter(|&i| answer(i)).collect();
        let (ids, _) = run(1, 100_000, 1001, answer);
        assert_eq!(ids, all);
        let (ids, _) = run(1, 100_000, 5, answer);
        assert_eq!(ids, all[..5]);
    }

    #[test]
    fn dense_answers_are_listed_at_once() {
        let (ids, steps) = run(1, 100_000, 50, |i| i % 2 == 0);
        assert_eq!(ids.len(), 50);
        assert_eq!(ids[0], 100_000);
        assert_eq!(steps, 2);
    }

    #[test]
    fn thin_answers_stay_bounded() {
        // One answer in every 3000 ids over a million: the counts run out and the rest is
        // listed, with every answer still found.
        let answer = |i: i64| i % 3000 == 0;
        let all: Vec<i64> = (1..=1_000_000).rev().filter(|&i| answer(i)).collect();
        let (ids, steps) = run(1, 1_000_000, 1001, answer);
        assert_eq!(ids, all);
        assert!(steps < 2 * MAX_COUNTS as usize + 400, "{steps} steps");
    }

    #[test]
    fn nothing_left_or_nothing_wanted_is_done() {
        assert_eq!(Complement::new(1, 10, 0, 5).next(), Step::Done);
        assert_eq!(Complement::new(1, 10, 3, 0).next(), Step::Done);
        assert_eq!(Complement::new(10, 1, 3, 5).next(), Step::Done);
    }

    #[test]
    fn wrong_counts_neither_loop_nor_panic() {
        // Counts that do not add up (more ids than the span, matches past ids) are taken as
        // far as they go.
        let mut plan = Complement::new(i64::MIN, i64::MAX, u64::MAX, u64::MAX);
        for n in 0..10_000u64 {
            match plan.next() {
                Step::Done => return,
                Step::Count { .. } => plan.counted(n.wrapping_mul(31), n),
                Step::List { .. } => plan.listed(0),
            }
        }
        panic!("the plan does not end");
    }
}
