//! `wfpipe data fetch|status` against a local HTTP server on 127.0.0.1 that serves a copy
//! of the data folder (with range requests, so a partial download resumes), never the
//! internet. Needs the MNIST files under `$WFPIPE_DATA` (or `../shared/data`).

mod common;
use common::*;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const FILES: [&str; 4] = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"];

/// Serves `root` over HTTP/1.1 (GET, `Range: bytes=N-`); logs `path range` per request.
struct Server {
    url: String,
    log: Arc<Mutex<Vec<String>>>,
}

fn serve(root: PathBuf) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let log = Arc::new(Mutex::new(Vec::new()));
    let requests = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            answer(stream.unwrap(), &root, &requests);
        }
    });
    Server { url, log }
}

fn answer(mut stream: TcpStream, root: &Path, log: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let mut from: Option<usize> = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap() == 0 || header.trim().is_empty() {
            break;
        }
        if let Some(v) = header.to_ascii_lowercase().strip_prefix("range: bytes=") {
            from = v.trim().trim_end_matches('-').parse().ok();
        }
    }
    log.lock().unwrap().push(format!("{path} {}", from.map(|f| f.to_string()).unwrap_or("-".into())));
    let head = |status: &str, extra: &str, len: usize| format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\n{extra}Connection: close\r\n\r\n");
    match std::fs::read(root.join(path.trim_start_matches('/'))) {
        Err(_) => stream.write_all(head("404 Not Found", "", 0).as_bytes()).unwrap(),
        Ok(bytes) => match from {
            Some(n) if n >= bytes.len() => stream.write_all(head("416 Range Not Satisfiable", "", 0).as_bytes()).unwrap(),
            Some(n) => {
                let range = format!("Content-Range: bytes {n}-{}/{}\r\n", bytes.len() - 1, bytes.len());
                stream.write_all(head("206 Partial Content", &range, bytes.len() - n).as_bytes()).unwrap();
                stream.write_all(&bytes[n..]).unwrap();
            }
            None => {
                stream.write_all(head("200 OK", "", bytes.len()).as_bytes()).unwrap();
                stream.write_all(&bytes).unwrap();
            }
        },
    }
}

/// The MNIST folder to serve, or `None` (said loudly) when there is none.
fn shared_mnist() -> Option<PathBuf> {
    let dir = std::env::var_os("WFPIPE_DATA").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    let mnist = dir.join("mnist");
    let found = FILES.iter().all(|f| mnist.join(f).is_file());
    if !found {
        eprintln!("SKIPPED: no MNIST files under {} to serve", dir.display());
    }
    found.then_some(mnist)
}

/// A served root holding `mnist/` copied from the data folder.
fn root_with_mnist(p: &Project, name: &str, source: &Path) -> PathBuf {
    let root = p.path().join(name);
    std::fs::create_dir_all(root.join("mnist")).unwrap();
    for f in FILES {
        std::fs::copy(source.join(f), root.join("mnist").join(f)).unwrap();
    }
    root
}

fn data(p: &Project, dir: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["data", "--data-dir", dir.to_str().unwrap()];
    all.extend_from_slice(args);
    p.cmd(&all).env_remove("WFPIPE_DATA_URL").output().unwrap()
}

#[test]
fn fetch_downloads_checks_resumes_and_replaces() {
    let Some(source) = shared_mnist() else { return };
    let p = Project::new();
    let server = serve(root_with_mnist(&p, "served", &source));
    let dir = p.path().join("data");

    // An empty folder: everything missing, and status says how to fetch it.
    let o = data(&p, &dir, &["status"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("missing (`wfpipe data fetch mnist`)"), "{}", text(&o));

    // A fresh fetch writes the four files, byte for byte what was served.
    let o = data(&p, &dir, &["fetch", "mnist", "--from", &server.url]);
    assert_ok(&o);
    assert_eq!(text(&o).matches("fetched").count(), 4, "{}", text(&o));
    for f in FILES {
        assert_eq!(std::fs::read(dir.join("mnist").join(f)).unwrap(), std::fs::read(source.join(f)).unwrap(), "{f}");
    }
    let o = data(&p, &dir, &["status"]);
    assert_eq!(text(&o).matches(" ok").count(), 4, "{}", text(&o));
    assert!(text(&o).contains("fashion-mnist") && text(&o).contains("missing"), "{}", text(&o));

    // A second fetch downloads nothing.
    server.log.lock().unwrap().clear();
    let o = data(&p, &dir, &["fetch", "mnist", "--from", &server.url]);
    assert_ok(&o);
    assert_eq!(text(&o).matches("present").count(), 4, "{}", text(&o));
    assert!(server.log.lock().unwrap().is_empty());

    // A partial download resumes from its length.
    let labels = dir.join("mnist/train-labels-idx1-ubyte.gz");
    let whole = std::fs::read(&labels).unwrap();
    std::fs::remove_file(&labels).unwrap();
    std::fs::write(dir.join("mnist/train-labels-idx1-ubyte.gz.part"), &whole[..10_000]).unwrap();
    let o = data(&p, &dir, &["fetch", "mnist", "--from", &server.url]);
    assert_ok(&o);
    assert!(line(&o, "train-labels-idx1-ubyte.gz").contains("fetched (") && line(&o, "train-labels-idx1-ubyte.gz").contains(", resumed)"), "{}", text(&o));
    assert_eq!(server.log.lock().unwrap().as_slice(), ["/mnist/train-labels-idx1-ubyte.gz 10000"]);
    assert_eq!(std::fs::read(&labels).unwrap(), whole);
    assert!(!dir.join("mnist/train-labels-idx1-ubyte.gz.part").exists());

    // A corrupt local file is replaced.
    std::fs::write(dir.join("mnist/t10k-images-idx3-ubyte.gz"), b"not gzip").unwrap();
    let o = data(&p, &dir, &["fetch", "all", "--from", &server.url]);
    // fashion-mnist is not served here: its first file fails, after MNIST was repaired.
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(line(&o, "t10k-images-idx3-ubyte.gz").contains("fetched"), "{}", text(&o));
    assert!(text(&o).contains("fashion-mnist/train-images-idx3-ubyte.gz") && text(&o).contains("404"), "{}", text(&o));
    let o = data(&p, &dir, &["status"]);
    assert_eq!(text(&o).matches(" ok").count(), 4, "{}", text(&o));
}

#[test]
fn a_corrupt_download_is_refused_and_removed() {
    let Some(source) = shared_mnist() else { return };
    let p = Project::new();
    let root = root_with_mnist(&p, "corrupt", &source);
    // Valid gzip, wrong content: the labels file gzipped once more.
    let labels = root.join("mnist/t10k-labels-idx1-ubyte.gz");
    std::fs::write(&labels, gzip(&std::fs::read(&labels).unwrap())).unwrap();
    let server = serve(root);
    let dir = p.path().join("data");
    let o = data(&p, &dir, &["fetch", "mnist", "--from", &server.url]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("t10k-labels-idx1-ubyte.gz: the downloaded file does not pass its check, so it was removed") && t.contains("sha256 mismatch"), "{t}");
    assert!(!dir.join("mnist/t10k-labels-idx1-ubyte.gz").exists() && !dir.join("mnist/t10k-labels-idx1-ubyte.gz.part").exists());
    // The files before it were fetched and kept.
    assert!(dir.join("mnist/train-images-idx3-ubyte.gz").is_file());
}

/// The output line naming `what`.
fn line(o: &std::process::Output, what: &str) -> String {
    text(o).lines().find(|l| l.contains(what)).unwrap_or_else(|| panic!("no line with {what}:\n{}", text(o))).to_owned()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}
