//! The SPF guard against a real DNS server on loopback: `dnsmasq` (Debian package `dnsmasq`)
//! serving a few records for `*.test`, on a free high port.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use samotop_core::parser::{Host, MailParams, Mailbox, ReversePath};
use samotop_core::{Envelope, Guard, Peer, SessionInfo, Verdict};
use samotop_spf::{Policy, SpfGuard};

/// The records served, as dnsmasq options (no quotes: dnsmasq would keep them in the record;
/// a comma starts another string of the same record).
const RECORDS: &[&str] = &[
    "--txt-record=pass.test,v=spf1 ip4:127.0.0.1 -all",
    "--txt-record=fail.test,v=spf1 ip4:192.0.2.1 -all",
    "--txt-record=softfail.test,v=spf1 ~all",
    // One record in two strings: joined without a separator (RFC 7208 3.3).
    "--txt-record=split.test,v=spf1 ip4:127.0.0.1, -all",
    "--txt-record=amech.test,v=spf1 a:host.test -all",
    "--txt-record=mxmech.test,v=spf1 mx -all",
    "--mx-host=mxmech.test,host.test,10",
    "--txt-record=a6mech.test,v=spf1 a:host6.test -all",
    "--host-record=host.test,127.0.0.1",
    "--host-record=host6.test,::1",
    // Three names that do not exist: the third void look-up is a permerror.
    "--txt-record=void.test,v=spf1 a:v1.test a:v2.test a:v3.test -all",
    // Names under test/ that are not listed get NXDOMAIN, not REFUSED.
    "--local=/test/",
];

/// A dnsmasq process, killed (by its PID) and reaped when dropped.
struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port that was free for both UDP and TCP a moment ago.
fn free_port() -> u16 {
    for _ in 0..20 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port for both UDP and TCP");
}

/// A DNS query for `name` TXT, as bytes.
fn txt_query(name: &str) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 16, 0, 1]);
    q
}

/// True once the server answers a query for `pass.test` with one record.
fn answers(addr: SocketAddr) -> bool {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    if socket.send_to(&txt_query("pass.test"), addr).is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    matches!(socket.recv(&mut buf), Ok(n) if n > 12 && buf[3] & 0x0f == 0 && buf[7] == 1)
}

fn dnsmasq_binary() -> PathBuf {
    for dir in ["/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin"] {
        let path = PathBuf::from(dir).join("dnsmasq");
        if path.exists() {
            return path;
        }
    }
    panic!("dnsmasq is not installed (Debian: apt-get install -y dnsmasq); this test needs it");
}

impl Dnsmasq {
    /// Starts dnsmasq on a free loopback port and waits (at most 5 s per try) until it answers.
    fn start() -> Dnsmasq {
        let binary = dnsmasq_binary();
        for _attempt in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let mut command = Command::new(&binary);
            command
                .arg("--no-daemon")
                .arg("--conf-file=/dev/null")
                .arg("--no-resolv")
                .arg("--no-hosts")
                .arg(format!("--port={port}"))
                .arg("--listen-address=127.0.0.1")
                .arg("--bind-interfaces")
                .arg(format!(
                    "--pid-file={}",
                    dir.path().join("dnsmasq.pid").display()
                ))
                .args(RECORDS)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if running_as_root() {
                // Else dnsmasq switches to user "nobody", which may not exist here.
                command.arg("--user=root");
            }
            let child = command.spawn().expect("cannot start dnsmasq");
            let mut server = Dnsmasq {
                child,
                addr,
                _dir: dir,
            };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = server.child.try_wait() {
                    break; // exited: most likely the port was taken meanwhile; try another
                }
                if answers(addr) {
                    return server;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            drop(server);
        }
        panic!("dnsmasq did not answer on loopback after 5 tries");
    }
}

/// The owner of `/proc/self` is this process's effective user.
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn session(peer_ip: &str) -> SessionInfo {
    let peer = SocketAddr::new(peer_ip.parse().unwrap(), 40000);
    let mut info = SessionInfo::new(Peer::Tcp(peer), "mx.test");
    info.helo = Some(Host::Domain("client.test".into()));
    info
}

fn envelope(local: &str, domain: &str) -> Envelope {
    let sender = ReversePath::Mailbox(Mailbox {
        local: local.into(),
        domain: Host::Domain(domain.into()),
    });
    Envelope::new(sender, MailParams::default(), "test.1".into())
}

/// The guard's verdict, bounded in time whatever the DNS does.
async fn mail(guard: &SpfGuard, peer_ip: &str, local: &str, domain: &str) -> Verdict {
    tokio::time::timeout(
        Duration::from_secs(60),
        guard.mail(&session(peer_ip), &envelope(local, domain)),
    )
    .await
    .expect("the SPF check must end within its own timeout")
}

fn header(v: Verdict) -> String {
    match v {
        Verdict::Note(mut note) if note.headers.len() == 1 => {
            let h = note.headers.remove(0);
            assert!(!h.contains(['\r', '\n']), "{h:?}");
            h
        }
        other => panic!("expected a Received-SPF header, got {other:?}"),
    }
}

#[tokio::test]
async fn pass_is_tagged() {
    let dns = Dnsmasq::start();
    let guard = SpfGuard::new(Policy::Tag, Some(dns.addr), "mx.test").unwrap();
    let h = header(mail(&guard, "127.0.0.1", "amy", "pass.test").await);
    assert_eq!(
        h,
        "Received-SPF: pass (mx.test: domain of amy@pass.test designates 127.0.0.1 as permitted \
         sender) client-ip=127.0.0.1; envelope-from=\"amy@pass.test\"; helo=client.test; \
         mechanism=\"ip4:127.0.0.1\"; receiver=mx.test; identity=mailfrom"
    );
}

#[tokio::test]
async fn fail_is_refused_under_reject() {
    let dns = Dnsmasq::start();
    let guard = SpfGuard::new(Policy::Reject, Some(dns.addr), "mx.test").unwrap();
    match mail(&guard, "127.0.0.1", "amy", "fail.test").await {
        Verdict::Reject(reply) => {
            assert_eq!((reply.code(), reply.enhanced()), (550, Some([5, 7, 23])));
            assert_eq!(
                reply.message(),
                "SPF check failed: fail.test does not designate 127.0.0.1 as permitted sender"
            );
        }
        other => panic!("expected 550 5.7.23, got {other:?}"),
    }
    // Under tag, the same sender is accepted and tagged.
    let tag = SpfGuard::new(Policy::Tag, Some(dns.addr), "mx.test").unwrap();
    let h = header(mail(&tag, "127.0.0.1", "amy", "fail.test").await);
    assert!(h.starts_with("Received-SPF: fail (mx.test: "), "{h}");
}

#[tokio::test]
async fn every_lookup_kind_over_real_dns() {
    let dns = Dnsmasq::start();
    let guard = SpfGuard::new(Policy::Reject, Some(dns.addr), "mx.test").unwrap();
    let table = [
        ("127.0.0.1", "split.test", "pass"),
        ("127.0.0.1", "amech.test", "pass"),
        ("127.0.0.2", "amech.test", "fail"),
        ("127.0.0.1", "mxmech.test", "pass"),
        ("::1", "a6mech.test", "pass"),
        ("127.0.0.1", "softfail.test", "softfail"),
        ("127.0.0.1", "nothing.test", "none"),
        ("127.0.0.1", "void.test", "permerror"),
    ];
    for (ip, domain, result) in table {
        let v = mail(&guard, ip, "amy", domain).await;
        match (result, v) {
            ("fail", Verdict::Reject(reply)) => assert_eq!(reply.code(), 550, "{domain}"),
            (_, Verdict::Note(mut note)) if note.headers.len() == 1 => {
                let h = note.headers.remove(0);
                assert!(
                    h.starts_with(&format!("Received-SPF: {result} ")),
                    "{domain}: {h}"
                )
            }
            (_, other) => panic!("{domain} from {ip}: expected {result}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn unreachable_dns_is_temperror_under_reject() {
    // Nobody listens on this port. The resolver's own bounds apply (2 s per try, 1 retry,
    // 5 s per look-up at most: about 4 s here), inside the check's default 20 s.
    let port = free_port();
    let nowhere = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let guard = SpfGuard::new(Policy::Reject, Some(nowhere), "mx.test").unwrap();
    match mail(&guard, "127.0.0.1", "amy", "pass.test").await {
        Verdict::Reject(reply) => {
            assert_eq!((reply.code(), reply.enhanced()), (451, Some([4, 7, 24])));
            assert!(
                reply
                    .message()
                    .starts_with("SPF check of pass.test could not be completed")
            );
        }
        other => panic!("expected 451 4.7.24, got {other:?}"),
    }
}

#[tokio::test]
async fn a_silent_dns_server_is_temperror_after_the_check_timeout() {
    // A server that reads queries and never answers; TCP to it is refused.
    let silent = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = silent.local_addr().unwrap();
    let guard = SpfGuard::new(Policy::Tag, Some(addr), "mx.test")
        .unwrap()
        .with_timeout(Duration::from_secs(2));
    let h = header(mail(&guard, "127.0.0.1", "amy", "pass.test").await);
    assert!(h.starts_with("Received-SPF: temperror (mx.test: "), "{h}");
    drop(silent);
}
