//! `exec:` with real programs: a shell script that writes files, `/bin/false`, one that
//! sleeps past the limit (with a child in the background), one that exits 75, one that
//! reads nothing; hostile recipient names. After each, no zombie and no leftover process.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Code, code, deliver};
use samotop_trigger::Exec;

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// The process is gone: not running, not a zombie waiting to be reaped.
fn gone(pid: &str) -> bool {
    let pid = pid.trim();
    assert!(!pid.is_empty(), "no pid written");
    !Path::new(&format!("/proc/{pid}")).exists()
}

fn wait_gone(pid: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if gone(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

const MESSAGE: &[u8] = b"Received: from client.test\r\nSubject: hi\r\n\r\nHello\r\n";

#[tokio::test]
async fn a_script_gets_the_message_and_the_envelope() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    std::fs::create_dir(&out).expect("mkdir");
    let prog = script(
        dir.path(),
        "store.sh",
        r#"cat > "$1/message" && env > "$1/env" && echo "stored $RECIPIENT" >&2"#,
    );
    let exec = Exec::new(&prog, vec![out.display().to_string()]).expect("exec");
    let outcomes = deliver(
        &exec,
        &["alerts+env=prod+x@example.org"],
        MESSAGE,
        Some([0xab; 32]),
    )
    .await;
    assert_eq!(outcomes, vec![Ok(())]);
    assert_eq!(
        std::fs::read(out.join("message")).expect("message"),
        MESSAGE
    );
    let env = std::fs::read_to_string(out.join("env")).expect("env");
    for line in [
        "SENDER=sender@example.com",
        "RECIPIENT=alerts+env=prod+x@example.org",
        "ORIGINAL_RECIPIENT=alerts+env=prod+x@example.org",
        "USER=alerts",
        "EXTENSION=env=prod+x",
        "DOMAIN=example.org",
        "EXT_ENV=prod",
        "EXT_X=",
        "CLIENT_ADDRESS=192.0.2.7",
        "CLIENT_PORT=4321",
        "HELO=client.test",
        "PROTOCOL=SMTP",
        "QUEUE_ID=s1.1",
        &format!("DIGEST={}", "ab".repeat(32)),
        &format!("SIZE={}", MESSAGE.len()),
        "PATH=/usr/local/bin:/usr/bin:/bin",
    ] {
        assert!(env.lines().any(|l| l == line), "{line} not in\n{env}");
    }
    // Nothing of ours leaks in: the environment was cleared.
    assert!(!env.contains("CARGO"), "{env}");
}

#[tokio::test]
async fn exit_codes_map_as_sysexits_says() {
    let dir = tempfile::tempdir().expect("tempdir");
    let table: &[(&str, Code)] = &[
        ("exit 0", (250, None)),
        ("exit 67", (550, Some([5, 1, 1]))),
        ("exit 75", (451, Some([4, 3, 0]))),
        ("exit 71", (451, Some([4, 3, 0]))),
        ("exit 77", (550, Some([5, 7, 1]))),
        ("exit 1", (554, Some([5, 3, 0]))),
        ("exit 78", (554, Some([5, 3, 0]))),
        ("kill -SEGV $$", (451, Some([4, 3, 0]))),
    ];
    for (i, &(body, expected)) in table.iter().enumerate() {
        let prog = script(dir.path(), &format!("s{i}.sh"), body);
        let exec = Exec::new(&prog, vec![]).expect("exec");
        let out = deliver(&exec, &["a@example.org"], MESSAGE, None).await;
        assert_eq!(code(&out[0]), expected, "{body}");
    }
    let exec = Exec::parse("/bin/false").expect("false");
    assert_eq!(
        code(&deliver(&exec, &["a@b"], MESSAGE, None).await[0]),
        (554, Some([5, 3, 0]))
    );
}

#[tokio::test]
async fn past_the_limit_the_whole_group_is_killed_and_reaped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pids = dir.path().join("pids");
    let prog = script(
        dir.path(),
        "slow.sh",
        r#"sleep 1000 & echo $! > "$1.child"; echo $$ > "$1"; sleep 1000"#,
    );
    let exec = Exec::new(&prog, vec![pids.display().to_string()])
        .expect("exec")
        .timeout(Duration::from_millis(500));
    let started = Instant::now();
    let out = deliver(&exec, &["a@example.org"], MESSAGE, None).await;
    assert_eq!(code(&out[0]), (451, Some([4, 3, 0])));
    assert!(started.elapsed() < Duration::from_secs(5));
    let leader = std::fs::read_to_string(&pids).expect("pid");
    let child = std::fs::read_to_string(pids.with_extension("child")).expect("child pid");
    assert!(
        wait_gone(&leader),
        "the program is still there (or a zombie)"
    );
    assert!(wait_gone(&child), "its background child is still there");
}

#[tokio::test]
async fn what_a_program_leaves_behind_is_killed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pid = dir.path().join("pid");
    // Exits at once, leaving a child that holds stderr open.
    let prog = script(
        dir.path(),
        "leave.sh",
        r#"sleep 1000 & echo $! > "$1"; exit 0"#,
    );
    let exec = Exec::new(&prog, vec![pid.display().to_string()]).expect("exec");
    let started = Instant::now();
    assert_eq!(
        deliver(&exec, &["a@example.org"], MESSAGE, None).await,
        vec![Ok(())]
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(wait_gone(&std::fs::read_to_string(&pid).expect("pid")));
}

#[tokio::test]
async fn a_program_that_reads_nothing_does_not_hang_us() {
    let big = vec![b'x'; 8 << 20];
    let exec = Exec::parse("/bin/true").expect("true");
    let started = Instant::now();
    assert_eq!(
        deliver(&exec, &["a@example.org"], &big, None).await,
        vec![Ok(())]
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    // One that reads a little and then fails.
    let exec = Exec::parse("/bin/sh -c 'head -c 10 >/dev/null; exit 75'").expect("sh");
    let out = deliver(&exec, &["a@example.org"], &big, None).await;
    assert_eq!(code(&out[0]), (451, Some([4, 3, 0])));
}

#[tokio::test]
async fn per_recipient_runs_answer_each_recipient() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prog = script(
        dir.path(),
        "each.sh",
        r#"[ "$USER" = gone ] && exit 67; cat > "$1/$USER.msg""#,
    );
    let exec = Exec::new(&prog, vec![dir.path().display().to_string()])
        .expect("exec")
        .per_recipient(true);
    let rcpts = [
        "a@example.org",
        "gone@example.org",
        "b@example.org",
        "c@x",
        "d@x",
        "e@x",
    ];
    let out = deliver(&exec, &rcpts, MESSAGE, None).await;
    let codes: Vec<u16> = out.iter().map(|o| code(o).0).collect();
    assert_eq!(codes, [250, 550, 250, 250, 250, 250]);
    for user in ["a", "b", "c", "d", "e"] {
        let stored = std::fs::read(dir.path().join(format!("{user}.msg"))).expect(user);
        assert_eq!(stored, MESSAGE);
    }
}

#[tokio::test]
async fn hostile_recipients_cannot_inject() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prog = script(dir.path(), "env.sh", r#"env > "$1/env.$$""#);
    let exec = Exec::new(&prog, vec![dir.path().display().to_string()])
        .expect("exec")
        .per_recipient(true);
    let long = format!("a+{}@example.org", "k=v+".repeat(3000));
    let hostile = [
        "$(touch${IFS}pwned);`touch pwned2`|x@example.org",
        "../../etc/passwd+a=../x@example.org",
        "a\r\nINJECTED=1+b=\n2@example.org",
        long.as_str(),
    ];
    let out = deliver(&exec, &hostile, MESSAGE, None).await;
    assert!(out.iter().all(Result::is_ok), "{out:?}");
    assert!(!dir.path().join("pwned").exists() && !Path::new("pwned").exists());
    assert!(!dir.path().join("pwned2").exists() && !Path::new("pwned2").exists());
    let mut all = String::new();
    for entry in std::fs::read_dir(dir.path()).expect("dir").flatten() {
        if entry.file_name().to_string_lossy().starts_with("env.") {
            all.push_str(&std::fs::read_to_string(entry.path()).expect("env"));
        }
    }
    assert!(all.contains("RECIPIENT=$(touch${IFS}pwned);`touch pwned2`|x@example.org"));
    assert!(all.contains("RECIPIENT=../../etc/passwd+a=../x@example.org"));
    assert!(all.contains("EXT_A=../x"));
    // CR and LF became `_`: no variable of the peer's making.
    assert!(
        all.contains("RECIPIENT=a__INJECTED=1+b=_2@example.org"),
        "{all}"
    );
    assert!(!all.lines().any(|l| l.starts_with("INJECTED=")));
    for line in all.lines() {
        let value = line.split_once('=').map_or(line, |(_, v)| v);
        assert!(value.len() <= 1024, "{} bytes in {line:.40}", value.len());
    }
    assert!(all.lines().filter(|l| l.starts_with("EXT_K=")).count() <= 4);
}

#[test]
fn the_command_must_exist() {
    assert!(Exec::parse("/no/such/program").is_err());
    assert!(Exec::parse("no-such-program-here").is_err());
    assert!(Exec::parse("").is_err());
    assert!(Exec::parse("'unclosed").is_err());
    assert!(Exec::parse("true").is_ok(), "found in PATH");
}
