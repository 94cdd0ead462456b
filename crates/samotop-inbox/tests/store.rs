//! The SQLite store through the scenarios of `common/mod.rs`, and what is SQLite's own
//! (WAL with `synchronous=FULL`).

mod common;

use samotop_inbox::{Inbox, Options};

fn open(dir: &tempfile::TempDir) -> Inbox {
    Inbox::sqlite(dir.path().join("inbox.db"), Options::default()).expect("open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_is_durable_wal_with_synchronous_full() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inbox = open(&dir);
    let (sync, mode) = inbox
        .sqlite_durability()
        .await
        .expect("pragma")
        .expect("sqlite");
    assert_eq!(sync, 2, "synchronous=FULL");
    assert_eq!(mode, "wal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_envelope_and_fields_are_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    common::raw_envelope_and_fields_are_kept(&open(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_inbox_per_address_and_bcc_stays_private() {
    let dir = tempfile::tempdir().expect("tempdir");
    common::one_inbox_per_address_and_bcc_stays_private(&open(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_syntax_over_the_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    common::search_syntax_over_the_index(&open(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_prefixes_find_every_term_they_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    common::search_prefixes_find_every_term_they_start(&open(&dir), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_returns_on_arrival_and_its_cursor_misses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    common::wait_returns_on_arrival_and_its_cursor_misses_nothing(&open(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_share_transactions_and_all_land() {
    let dir = tempfile::tempdir().expect("tempdir");
    common::concurrent_commits_share_transactions_and_all_land(&open(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_does_not_parse_is_stored_and_shown_raw() {
    let dir = tempfile::tempdir().expect("tempdir");
    common::a_message_that_does_not_parse_is_stored_and_shown_raw(&open(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_by_count_and_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inbox = Inbox::sqlite(
        dir.path().join("p.db"),
        common::pruning_by_count_and_size_options(),
    )
    .expect("open");
    common::pruning_by_count_and_size(&inbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_by_age_reports_and_keeps_new_mail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inbox = Inbox::sqlite(
        dir.path().join("a.db"),
        common::pruning_by_age_reports_and_keeps_new_mail_options(),
    )
    .expect("open");
    common::pruning_by_age_reports_and_keeps_new_mail(&inbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totals_stay_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    common::totals_stay_exact(&open(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_over_the_cap_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    common::a_search_over_the_cap_says_so(&open(&dir)).await;
}
