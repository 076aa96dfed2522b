//! `wfpipe data fetch|status`: the MNIST and Fashion-MNIST IDX files, downloaded from
//! their public locations into the data folder and checked against the SHA-256 of their
//! decompressed bytes, the same check every stage makes when it loads them.
//!
//! A download goes to `<file>.gz.part` and resumes from its length (an HTTP range
//! request); only a file that passes the check is renamed into place, so an interrupted
//! or corrupt download never looks like data.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use wfpipe_stages::data::{self, idx, mnist, DataError, DatasetName};

/// Where each dataset's `<name>.gz` files are published (the PyTorch mirror of LeCun's
/// MNIST files, and Zalando's own bucket for Fashion-MNIST).
const SOURCES: [(DatasetName, &str); 2] = [
    (DatasetName::Mnist, "https://ossci-datasets.s3.amazonaws.com/mnist/"),
    (DatasetName::FashionMnist, "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"),
];

pub const DATASETS: [DatasetName; 2] = [DatasetName::Mnist, DatasetName::FashionMnist];

/// One file's state in the data folder.
enum FileState {
    Valid,
    Missing,
    Invalid(String),
}

fn state(dir: &Path, file: idx::IdxFile) -> FileState {
    match idx::read_checked(dir, file) {
        Ok(_) => FileState::Valid,
        Err(DataError::Missing { .. }) => FileState::Missing,
        Err(e) => FileState::Invalid(e.to_string()),
    }
}

fn dataset_dir(data_dir: &Path, name: DatasetName) -> PathBuf {
    data_dir.join(data::folder(name).expect("an IDX dataset"))
}

fn idx_files(name: DatasetName) -> [idx::IdxFile; 4] {
    mnist::files(name).expect("an IDX dataset")
}

/// `wfpipe data status`: every file, present and valid or not; true when all are.
pub fn status(data_dir: &Path) -> (String, bool) {
    let mut out = format!("data folder {}\n", data_dir.display());
    let mut all = true;
    for name in DATASETS {
        let dir = dataset_dir(data_dir, name);
        for file in idx_files(name) {
            let what = match state(&dir, file) {
                FileState::Valid => "ok".to_owned(),
                FileState::Missing => format!("missing (`wfpipe data fetch {name}`)"),
                FileState::Invalid(e) => format!("invalid: {e}"),
            };
            all &= what == "ok";
            let _ = writeln!(out, "  {:<14} {:<26} {what}", name.to_string(), format!("{}.gz", file.name));
        }
    }
    (out, all)
}

/// `wfpipe data fetch`: download every missing or invalid file of `datasets`, telling
/// `say` one line per file as it is done. `base` replaces the public locations with
/// `<base>/<dataset folder>/` (a mirror).
pub fn fetch(data_dir: &Path, datasets: &[DatasetName], base: Option<&str>, say: &mut dyn FnMut(&str)) -> anyhow::Result<()> {
    let agent = ureq::AgentBuilder::new().timeout_connect(Duration::from_secs(30)).timeout_read(Duration::from_secs(120)).build();
    for &name in datasets {
        let dir = dataset_dir(data_dir, name);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let url_dir = match base {
            Some(b) => format!("{}/{}/", b.trim_end_matches('/'), data::folder(name).expect("an IDX dataset")),
            None => SOURCES.iter().find(|(n, _)| *n == name).expect("a source per dataset").1.to_owned(),
        };
        for file in idx_files(name) {
            let gz = format!("{}.gz", file.name);
            if let FileState::Valid = state(&dir, file) {
                say(&format!("  {:<14} {gz:<26} present\n", name.to_string()));
                continue;
            }
            let url = format!("{url_dir}{gz}");
            let part = dir.join(format!("{gz}.part"));
            let resumed = download(&agent, &url, &part)?;
            let dest = dir.join(&gz);
            install(&part, &dest)?;
            let state = match state(&dir, file) {
                FileState::Valid => FileState::Valid,
                // A resumed part may have been cut from another copy: once more from byte 0.
                _ if resumed => {
                    std::fs::remove_file(&dest)?;
                    download(&agent, &url, &part)?;
                    install(&part, &dest)?;
                    state(&dir, file)
                }
                other => other,
            };
            let why = match state {
                FileState::Valid => {
                    let size = std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
                    say(&format!("  {:<14} {gz:<26} fetched ({}{})\n", name.to_string(), super::cache_cmd::human_bytes(size), if resumed { ", resumed" } else { "" }));
                    continue;
                }
                FileState::Invalid(e) => e,
                FileState::Missing => "not written".to_owned(),
            };
            let _ = std::fs::remove_file(&dest);
            bail!("{url}: the downloaded file does not pass its check, so it was removed: {why}");
        }
    }
    Ok(())
}

/// Download `url` into `part`, resuming from its length; true when it resumed.
fn download(agent: &ureq::Agent, url: &str, part: &Path) -> anyhow::Result<bool> {
    let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let mut request = agent.get(url);
    if have > 0 {
        request = request.set("Range", &format!("bytes={have}-"));
    }
    let response = match request.call() {
        Ok(r) => r,
        // The part is already whole.
        Err(ureq::Error::Status(416, _)) if have > 0 => return Ok(true),
        Err(e) => bail!("cannot download {url}: {e}"),
    };
    let resumed = have > 0 && response.status() == 206;
    let mut f = if resumed { OpenOptions::new().append(true).open(part) } else { std::fs::File::create(part) }.with_context(|| format!("cannot write {}", part.display()))?;
    std::io::copy(&mut response.into_reader(), &mut f).with_context(|| format!("download of {url} broke off; run `wfpipe data fetch` again to resume"))?;
    f.sync_all()?;
    Ok(resumed)
}

/// Move a finished download into place (replacing an invalid file of that name).
fn install(part: &Path, dest: &Path) -> anyhow::Result<()> {
    std::fs::rename(part, dest).with_context(|| format!("cannot move {} to {}", part.display(), dest.display()))
}

/// Parse `mnist`, `fashion-mnist` or `all`.
pub fn parse_which(word: &str) -> Result<Vec<DatasetName>, String> {
    match word {
        "all" => Ok(DATASETS.to_vec()),
        w => DATASETS.iter().find(|n| n.to_string() == w).map(|&n| vec![n]).ok_or_else(|| format!("`{w}`: expected mnist, fashion-mnist or all")),
    }
}
