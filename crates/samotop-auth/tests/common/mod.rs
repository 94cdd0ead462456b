//! The harness of the integration tests: keys made by the real tools (`opendkim-genkey`,
//! dkimpy's `dknewkey`), messages signed by the real signers (Debian's `dkimsign`,
//! dkimpy through `helper.py`, `opendkim` in test mode, `opendkim-testmsg`), served by a
//! throw-away `dnsmasq` on 127.0.0.1 at a free port, started once per test binary and
//! stopped by its PID when the test process ends.
//!
//! Needs the Debian packages opendkim, opendkim-tools, python3-dkim, python3-dnspython,
//! python3-nacl, python3-authres and dnsmasq-base (`scripts/setup` installs them).
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use samotop_auth::{Config, Context, Report, Resolver, Scanner, Verifier};

/// Debian's Python: its `dkim` module is python3-dkim (dkimpy 1.1.4).
pub const PYTHON: &str = "/usr/bin/python3";

/// A key to make and where to publish it.
pub struct KeySpec {
    /// The file name stem, and the selector.
    pub name: &'static str,
    pub kind: KeyKind,
    /// The domains whose `NAME._domainkey` publishes it.
    pub domains: &'static [&'static str],
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa(u32),
    Ed25519,
}

/// A key made for the tests.
pub struct Key {
    pub selector: String,
    /// The private key: PEM (RSA from opendkim-genkey, PKCS#8 for ed25519) for OpenDKIM
    /// and, for RSA, for dkimpy.
    pub pem: PathBuf,
    /// What dkimpy signs with: the PEM for RSA, the base64 seed for ed25519.
    pub dkimpy: PathBuf,
    /// The key record, as published.
    pub record: String,
    pub kind: KeyKind,
}

pub struct Fixture {
    pub dir: PathBuf,
    pub dns: SocketAddr,
    pub keys: HashMap<&'static str, Key>,
    pub helper: PathBuf,
}

fn run(cmd: &mut Command, input: &[u8]) -> Vec<u8> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} ({e}): run scripts/setup"));
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A loopback port that was free for both UDP and TCP a moment ago.
pub fn free_port() -> u16 {
    for _ in 0..20 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port for both UDP and TCP");
}

fn txt_query(name: &str) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 16, 0, 1]);
    q
}

fn answers(addr: SocketAddr, name: &str) -> bool {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    if socket.send_to(&txt_query(name), addr).is_err() {
        return false;
    }
    let mut buf = [0u8; 1500];
    matches!(socket.recv(&mut buf), Ok(n) if n > 12 && buf[3] & 0x0f == 0 && buf[7] >= 1)
}

/// The record text of an opendkim-genkey `.txt` file: its quoted strings joined.
fn genkey_record(txt: &str) -> String {
    let mut out = String::new();
    let mut rest = txt;
    while let Some(start) = rest.find('"') {
        let Some(end) = rest[start + 1..].find('"') else {
            break;
        };
        out.push_str(&rest[start + 1..start + 1 + end]);
        rest = &rest[start + 2 + end..];
    }
    out
}

impl Fixture {
    /// Makes the keys, then starts dnsmasq with their records and `records` (each
    /// `name,text`; the text is split into strings of at most 200 bytes).
    pub fn start(
        tag: &str,
        specs: &[KeySpec],
        records: &[(&str, &str)],
        local: &[&str],
    ) -> Fixture {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("auth-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let helper = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/helper.py");
        let mut keys = HashMap::new();
        let mut txt: Vec<(String, String)> = Vec::new();
        for spec in specs {
            let key = match spec.kind {
                KeyKind::Rsa(bits) => {
                    run(
                        Command::new("opendkim-genkey")
                            .arg(format!("--bits={bits}"))
                            .arg(format!("--selector={}", spec.name))
                            .arg("--domain=example.com")
                            .arg(format!("--directory={}", dir.display())),
                        b"",
                    );
                    let pem = dir.join(format!("{}.private", spec.name));
                    let record = genkey_record(
                        &std::fs::read_to_string(dir.join(format!("{}.txt", spec.name))).unwrap(),
                    );
                    Key {
                        selector: spec.name.into(),
                        dkimpy: pem.clone(),
                        pem,
                        record,
                        kind: spec.kind,
                    }
                }
                KeyKind::Ed25519 => {
                    let stem = dir.join(spec.name);
                    run(
                        Command::new("dknewkey")
                            .arg("--ktype")
                            .arg("ed25519")
                            .arg(&stem),
                        b"",
                    );
                    let seed_b64 = std::fs::read_to_string(stem.with_extension("key")).unwrap();
                    let seed = base64::engine::general_purpose::STANDARD
                        .decode(seed_b64.trim())
                        .unwrap();
                    assert_eq!(seed.len(), 32);
                    // PKCS#8 for OpenDKIM: the fixed prefix of an Ed25519 PrivateKeyInfo.
                    let mut der = vec![
                        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70,
                        0x04, 0x22, 0x04, 0x20,
                    ];
                    der.extend_from_slice(&seed);
                    let pem = dir.join(format!("{}.pem", spec.name));
                    std::fs::write(
                        &pem,
                        format!(
                            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                            base64::engine::general_purpose::STANDARD.encode(&der)
                        ),
                    )
                    .unwrap();
                    let record = std::fs::read_to_string(stem.with_extension("dns"))
                        .unwrap()
                        .trim()
                        .to_owned();
                    Key {
                        selector: spec.name.into(),
                        pem,
                        dkimpy: stem.with_extension("key"),
                        record,
                        kind: spec.kind,
                    }
                }
            };
            for domain in spec.domains {
                txt.push((
                    format!("{}._domainkey.{domain}", spec.name),
                    key.record.clone(),
                ));
            }
            keys.insert(spec.name, key);
        }
        for (name, text) in records {
            txt.push((name.to_string(), text.to_string()));
        }
        let port = free_port();
        let dns = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut args = vec![
            "--no-daemon".to_string(),
            format!("--port={port}"),
            "--listen-address=127.0.0.1".into(),
            "--bind-interfaces".into(),
            "--no-resolv".into(),
            "--no-hosts".into(),
            format!("--pid-file={}", dir.join("dnsmasq.pid").display()),
        ];
        for l in local {
            args.push(format!("--local=/{l}/"));
        }
        for (name, text) in &txt {
            if let Some(ip) = text.strip_prefix("A ") {
                args.push(format!("--host-record={name},{ip}"));
                continue;
            }
            // At most 200 bytes per string: the record comes back as several strings,
            // which the resolver must join (RFC 6376 3.6.2.2).
            let strings: Vec<String> = text
                .as_bytes()
                .chunks(200)
                .map(|c| String::from_utf8(c.to_vec()).unwrap())
                .collect();
            args.push(format!("--txt-record={name},{}", strings.join(",")));
        }
        // dnsmasq runs under a small shell that kills it (by its PID) as soon as this
        // test process is gone: statics are never dropped.
        let script = format!(
            "dnsmasq \"$@\" & d=$!; trap 'kill $d 2>/dev/null' EXIT; \
             while kill -0 {parent} 2>/dev/null && kill -0 $d 2>/dev/null; do sleep 0.2; done",
            parent = std::process::id()
        );
        let log = std::fs::File::create(dir.join("dnsmasq.log")).unwrap();
        // Not waited for: the watchdog outlives this process on purpose.
        #[allow(clippy::zombie_processes)]
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .args(&args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start dnsmasq: run scripts/setup");
        let probe = txt.first().map(|(n, _)| n.clone()).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !answers(dns, &probe) {
            assert!(
                Instant::now() < deadline,
                "dnsmasq did not answer: {}",
                std::fs::read_to_string(dir.join("dnsmasq.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Fixture {
            dir,
            dns,
            keys,
            helper,
        }
    }

    pub fn key(&self, name: &str) -> &Key {
        &self.keys[name]
    }

    /// Debian's `dkimsign`.
    pub fn dkimsign(
        &self,
        msg: &[u8],
        key: &str,
        domain: &str,
        hcanon: &str,
        bcanon: &str,
    ) -> Vec<u8> {
        let key = self.key(key);
        let alg = match key.kind {
            KeyKind::Rsa(_) => "rsa-sha256",
            KeyKind::Ed25519 => "ed25519-sha256",
        };
        run(
            Command::new("/usr/bin/dkimsign")
                .args(["--hcanon", hcanon, "--bcanon", bcanon, "--signalg", alg])
                .arg(&key.selector)
                .arg(domain)
                .arg(&key.dkimpy),
            msg,
        )
    }

    /// dkimpy's `dkim.sign` through helper.py, with options (`length`, `identity`,
    /// `headers`, `hcanon`, `bcanon`, `alg`).
    pub fn dkimpy_sign(&self, msg: &[u8], key: &str, domain: &str, options: &str) -> Vec<u8> {
        let k = self.key(key);
        let mut opts = format!(
            "{{\"key\": \"{}\", \"selector\": \"{}\", \"domain\": \"{domain}\"",
            k.dkimpy.display(),
            k.selector
        );
        if !options.is_empty() {
            opts.push_str(", ");
            opts.push_str(options);
        }
        opts.push('}');
        run(
            Command::new(PYTHON).arg(&self.helper).arg("sign").arg(opts),
            msg,
        )
    }

    /// OpenDKIM (`opendkim -t`, test mode) with `canon` (`relaxed/simple`, ...), its
    /// key's algorithm, and `ttl` (SignatureTTL, adds `x=`).
    pub fn opendkim(
        &self,
        msg: &[u8],
        key: &str,
        domain: &str,
        canon: &str,
        ttl: Option<u32>,
    ) -> Vec<u8> {
        let k = self.key(key);
        let alg = match k.kind {
            KeyKind::Rsa(_) => "rsa-sha256",
            KeyKind::Ed25519 => "ed25519-sha256",
        };
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let conf = self.dir.join(format!("opendkim-{n}.conf"));
        let file = self.dir.join(format!("opendkim-{n}.eml"));
        let mut text = format!(
            "Mode s\nDomain {domain}\nSelector {}\nKeyFile {}\nCanonicalization {canon}\n\
             SignatureAlgorithm {alg}\nSyslog no\nRequireSafeKeys no\nOversignHeaders From\n",
            k.selector,
            k.pem.display()
        );
        if let Some(ttl) = ttl {
            text.push_str(&format!("SignatureTTL {ttl}\n"));
        }
        std::fs::write(&conf, text).unwrap();
        std::fs::write(&file, msg).unwrap();
        let out = run(
            Command::new("opendkim")
                .arg("-x")
                .arg(&conf)
                .arg("-t")
                .arg(&file),
            b"",
        );
        let out = String::from_utf8(out).unwrap();
        let start = out
            .find("DKIM-Signature:")
            .unwrap_or_else(|| panic!("opendkim did not sign: {out}"));
        let header = out[start..]
            .trim_end()
            .replace("\r\n", "\n")
            .replace('\n', "\r\n");
        let mut signed = format!("{header}\r\n").into_bytes();
        signed.extend_from_slice(msg);
        signed
    }

    /// `opendkim-testmsg`: rsa-sha1, relaxed/simple (its fixed choice).
    pub fn opendkim_testmsg(&self, msg: &[u8], key: &str, domain: &str) -> Vec<u8> {
        let k = self.key(key);
        run(
            Command::new("opendkim-testmsg")
                .arg("-C")
                .arg("-d")
                .arg(domain)
                .arg("-k")
                .arg(&k.pem)
                .arg("-s")
                .arg(&k.selector)
                .arg("-t")
                .arg(&self.dir),
            msg,
        )
    }

    /// dkimpy's verdict on each signature of each message (`dkim.verify` per index, with
    /// a dnsfunc asking our dnsmasq).
    pub fn dkimpy_verify(&self, messages: &[Vec<u8>]) -> Vec<Vec<bool>> {
        let paths = self.write_all("verify", messages);
        let out = run(
            Command::new(PYTHON)
                .arg(&self.helper)
                .arg("verify")
                .arg(self.dns.port().to_string())
                .args(&paths),
            b"",
        );
        parse_json_bools(&String::from_utf8(out).unwrap())
    }

    /// dkimpy's `arc_sign`: the message with a new ARC set on top.
    pub fn arc_sign(&self, msg: &[u8], key: &str, domain: &str, srv_id: &str) -> Vec<u8> {
        let k = self.key(key);
        let opts = format!(
            "{{\"key\": \"{}\", \"selector\": \"{}\", \"domain\": \"{domain}\", \"srv_id\": \"{srv_id}\"}}",
            k.dkimpy.display(),
            k.selector
        );
        run(
            Command::new(PYTHON)
                .arg(&self.helper)
                .arg("arc-sign")
                .arg(opts),
            msg,
        )
    }

    /// dkimpy's `arc_verify` verdict per message: "pass", "fail" or "none".
    pub fn arc_verify(&self, messages: &[Vec<u8>]) -> Vec<String> {
        let paths = self.write_all("arc", messages);
        let out = run(
            Command::new(PYTHON)
                .arg(&self.helper)
                .arg("arc-verify")
                .arg(self.dns.port().to_string())
                .args(&paths),
            b"",
        );
        let text = String::from_utf8(out).unwrap();
        text.trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .split(',')
            .map(|s| s.trim().trim_matches('"').to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    }

    fn write_all(&self, tag: &str, messages: &[Vec<u8>]) -> Vec<PathBuf> {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let path = self.dir.join(format!("{tag}-{n}-{i}.eml"));
                std::fs::write(&path, m).unwrap();
                path
            })
            .collect()
    }

    /// A verifier asking our dnsmasq through hickory.
    pub fn verifier(&self, config: Config) -> Verifier {
        Verifier::new(Resolver::new(Some(self.dns)).unwrap(), config)
    }
}

static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn parse_json_bools(text: &str) -> Vec<Vec<bool>> {
    // [[true, false], [], [true]]
    let inner = text
        .trim()
        .strip_prefix('[')
        .unwrap()
        .strip_suffix(']')
        .unwrap();
    let mut out = Vec::new();
    for part in inner.split('[').skip(1) {
        let list = part.split(']').next().unwrap();
        out.push(
            list.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| s == "true")
                .collect(),
        );
    }
    out
}

/// How to cut a message into chunks.
#[derive(Clone, Copy, Debug)]
pub enum Split {
    Whole,
    Bytes,
    Random(u64),
}

/// Feeds `msg` to `scanner` cut as `split` says.
pub fn feed(scanner: &mut Scanner, msg: &[u8], split: Split) {
    match split {
        Split::Whole => scanner.update(msg),
        Split::Bytes => msg.chunks(1).for_each(|c| scanner.update(c)),
        Split::Random(seed) => {
            let mut state = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mut rest = msg;
            while !rest.is_empty() {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let n = ((state >> 33) % 97 + 1) as usize;
                let n = n.min(rest.len());
                scanner.update(&rest[..n]);
                rest = &rest[n..];
            }
        }
    }
}

/// Checks `msg` with `verifier`, fed as `split` says.
pub async fn check<D: samotop_auth::Dns>(
    verifier: &Verifier<D>,
    msg: &[u8],
    split: Split,
    context: &Context,
) -> Report {
    let mut scanner = verifier.scanner();
    feed(&mut scanner, msg, split);
    scanner.finish(verifier, context).await
}

/// Writes `msg` next to the fixture for a human to look at when a test fails.
pub fn keep(dir: &Path, name: &str, msg: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, msg).unwrap();
    path
}
