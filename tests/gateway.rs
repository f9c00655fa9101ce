//! The HTTP read gateway end to end: a real hoardd serving `[http]`, read
//! by plain urllib, fsspec, pandas/pyarrow and Dask (a 2-worker local
//! cluster) through hoard's fsspec package (python/, in the venv that
//! scripts/pyenv.sh makes), and an empty daemon reading ranges through its
//! remote.

mod common;

use common::{free_port, Env};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The venv's python (made on first use; slow only then).
fn python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("scripts/pyenv.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/pyenv.sh");
    assert!(out.status.success(), "scripts/pyenv.sh failed");
    PathBuf::from(String::from_utf8(out.stdout).expect("utf-8").trim())
}

fn check_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/gateway_check.py")
}

/// Runs the check script, bounded in time; panics with its output on failure.
fn run_python(py: &Path, args: &[&str], limit: Duration) -> String {
    let child = Command::new(py)
        .arg(check_script())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python");
    let o = common::wait_output(child, limit, "gateway_check.py");
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(
        o.status.success(),
        "gateway_check.py {args:?} failed:\n{out}\n{err}"
    );
    print!("{out}");
    out
}

/// Writes `len` pseudo-random (incompressible) bytes to `path`.
fn write_big(path: &Path, len: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let piece = 64 << 20;
    let mut done = 0;
    let mut seed = 1;
    while done < len {
        let n = piece.min(len - done);
        f.write_all(&common::data(n, seed, false)).unwrap();
        done += n;
        seed += 1;
    }
    f.flush().unwrap();
}

/// The sample data (gateway_check.py make) and a `big.bin` of `big`
/// incompressible bytes, recorded as dataset `survey` tagged v3.
fn survey(py: &Path, env: &Env, big: usize) -> PathBuf {
    let src = env.path("survey");
    std::fs::create_dir_all(&src).unwrap();
    run_python(
        py,
        &["make", src.to_str().unwrap()],
        Duration::from_secs(300),
    );
    write_big(&src.join("big.bin"), big);
    env.ok(&["dataset", "add", "survey", src.to_str().unwrap()]);
    env.ok(&["snapshot", "survey", "-m", "v3"]);
    env.ok(&["tag", "survey", "v3"]);
    src
}

fn gateway_config(env: &Env, port: u16, extra: &str) {
    std::fs::create_dir_all(&env.home).unwrap();
    std::fs::write(
        env.home.join("config.toml"),
        format!("[http]\nlisten = \"127.0.0.1:{port}\"\n{extra}"),
    )
    .unwrap();
}

fn get(url: &str) -> (u16, Vec<u8>) {
    request(url, None)
}

/// A minimal HTTP/1.1 GET over loopback (with a byte range if given),
/// for what the test itself asks; the status and the body.
fn request(url: &str, range: Option<(usize, usize)>) -> (u16, Vec<u8>) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let range = range
        .map(|(a, n)| format!("Range: bytes={a}-{}\r\n", a + n - 1))
        .unwrap_or_default();
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\n{range}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf);
    let status: u16 = text[9..12].parse().unwrap();
    let at = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    (status, buf[at..].to_vec())
}

fn gateway_stats(base: &str) -> serde_json::Value {
    let (s, body) = get(&format!("{base}/v1/stats"));
    assert_eq!(s, 200);
    serde_json::from_slice(&body).unwrap()
}

#[test]
fn pandas_dask_fsspec_and_urllib_read_snapshots_through_the_gateway() {
    let py = python();
    let env = Env::new();
    let port = free_port();
    gateway_config(&env, port, "");
    let src = survey(&py, &env, 1 << 30);
    let base = format!("http://127.0.0.1:{port}");
    let cfg = serde_json::json!({
        "url": base,
        "src": src,
        "rev": "v3",
        "big": "big.bin",
    });
    let cfg_path = env.path("check.json");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    run_python(
        &py,
        &["check", cfg_path.to_str().unwrap()],
        Duration::from_secs(900),
    );
}

#[test]
fn a_gateway_that_requires_tokens_refuses_callers_without_a_read_token() {
    let py = python();
    let env = Env::new();
    let port = free_port();
    gateway_config(&env, port, "require_token = true\n");
    let src = survey(&py, &env, 3 << 20);
    let token = env.token(false);
    let base = format!("http://127.0.0.1:{port}");
    let (s, _) = get(&format!("{base}/v1/stats"));
    assert_eq!(s, 401, "stats without a token");
    let cfg = serde_json::json!({
        "url": base,
        "src": src,
        "rev": "v3",
        "big": "big.bin",
        "token_url": base,
        "token_path": "/v1/datasets/survey@v3/notes%20with%20space.txt",
        "token_file": src.join("notes with space.txt"),
        "read_token": token,
    });
    let cfg_path = env.path("check.json");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let child = Command::new(&py)
        .arg("-c")
        .arg(format!(
            "import sys, json; sys.path.insert(0, {dir:?}); import gateway_check as g; g.check_tokens(json.load(open({cfg:?})))",
            dir = check_script().parent().unwrap(),
            cfg = cfg_path,
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = common::wait_output(child, Duration::from_secs(120), "check_tokens");
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    print!("{}", String::from_utf8_lossy(&o.stdout));
}

#[test]
fn an_empty_daemon_reads_a_range_through_its_remote_fetching_only_the_frames_it_needs() {
    // The hub holds the dataset; the reader's store is empty.
    let hub = Env::new();
    let url = hub.start_hub();
    let src = hub.path("survey");
    std::fs::create_dir_all(src.join("train")).unwrap();
    let big = common::data(48 << 20, 21, true);
    std::fs::write(src.join("train/big.csv"), &big).unwrap();
    std::fs::write(src.join("small.txt"), b"small file\n").unwrap();
    hub.ok(&["dataset", "add", "survey", src.to_str().unwrap()]);
    hub.ok(&["snapshot", "survey", "-m", "v1"]);
    hub.ok(&["tag", "survey", "v1"]);
    let token = hub.token(false);

    let reader = Env::new();
    let port = free_port();
    gateway_config(&reader, port, "");
    reader.ok(&["remote", "add", "origin", &url, "--token", &token]);
    reader.ok(&["daemon", "start"]);
    let base = format!("http://127.0.0.1:{port}");

    // A listing: only the snapshot and its trees come over.
    let (s, body) = get(&format!("{base}/v1/datasets/survey@v1/train"));
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    let listing: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(listing["entries"][0]["name"], "big.csv");
    assert_eq!(listing["entries"][0]["size"], big.len() as u64);

    // 64 KiB in the middle of a 48 MiB file.
    let (a, n) = (20 << 20, 64 << 10);
    let (s, got) = request(
        &format!("{base}/v1/datasets/survey@v1/train/big.csv"),
        Some((a, n)),
    );
    assert_eq!(s, 206);
    assert_eq!(got.len(), n, "range length");
    assert!(
        got == big[a..a + n],
        "the range read through the remote differs"
    );
    let st = gateway_stats(&base);
    let fetched = st["remote_bytes"].as_u64().unwrap();
    println!(
        "on demand: a {n}-byte range of a {}-byte file moved {fetched} bytes from the hub",
        big.len()
    );
    assert!(fetched > 0, "{st}");
    assert!(
        fetched < 4 << 20,
        "a 64 KiB range moved {fetched} bytes from the hub: more than the frames it needs"
    );
    // The file is not recorded (its whole content was not checked)...
    let stats: serde_json::Value = reader.json(&["stats"]).pop().unwrap();
    assert_eq!(stats["files"], 0, "{stats}");
    // ...until it is read whole, which checks it against its id.
    let (s, whole) = get(&format!("{base}/v1/datasets/survey@v1/train/big.csv"));
    assert_eq!(s, 200);
    assert!(
        whole == big,
        "the whole file read through the remote differs"
    );
    let stats: serde_json::Value = reader.json(&["stats"]).pop().unwrap();
    assert_eq!(stats["files"], 1, "{stats}");
    reader.ok(&["verify", "--read-data"]);
}

#[test]
fn an_https_gateway_serves_with_the_stores_certificate() {
    let py = python();
    let env = Env::new();
    let port = free_port();
    gateway_config(&env, port, "tls = true\n");
    let src = env.path("d");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"over https\n").unwrap();
    env.ok(&["dataset", "add", "d", src.to_str().unwrap()]);
    env.ok(&["snapshot", "d", "-m", "one"]);
    let cert = env.home.join("peer-tls/cert.pem");
    assert!(cert.exists(), "the store's certificate");
    let script = format!(
        r#"
import fsspec, ssl, urllib.request
fs = fsspec.filesystem("hoard", url="https://localhost:{port}", ca={cert:?})
assert fs.cat_file("d/a.txt") == b"over https\n", "fsspec over https"
ctx = ssl.create_default_context(cafile={cert:?})
with urllib.request.urlopen("https://localhost:{port}/v1/datasets/d/a.txt", context=ctx) as r:
    assert r.read() == b"over https\n"
try:
    urllib.request.urlopen("https://localhost:{port}/v1/datasets/d/a.txt", timeout=10)
    raise SystemExit("a certificate nobody trusts was accepted")
except urllib.error.URLError as e:
    assert "CERTIFICATE_VERIFY_FAILED" in str(e), e
print("https: served with the store's certificate; an untrusted one is refused")
"#,
        cert = cert.to_str().unwrap()
    );
    let child = Command::new(&py)
        .arg("-c")
        .arg(script)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = common::wait_output(child, Duration::from_secs(120), "https check");
    assert!(
        o.status.success(),
        "{}\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        env.log_tail(20)
    );
    print!("{}", String::from_utf8_lossy(&o.stdout));
}

#[test]
fn a_gateway_off_loopback_without_tls_is_refused_at_start() {
    let env = Env::new();
    std::fs::create_dir_all(&env.home).unwrap();
    std::fs::write(
        env.home.join("config.toml"),
        "[http]\nlisten = \"0.0.0.0:1\"\n",
    )
    .unwrap();
    // Refused before anything listens: no address but loopback is ever bound.
    let child = env
        .hoardd()
        .arg("run")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = common::wait_output(child, Duration::from_secs(30), "hoardd run");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("without TLS") && err.contains("[http]"),
        "{err}"
    );
}
