//! LeCun's IDX format (MNIST, Fashion-MNIST), gzip-compressed or not, with a SHA-256 check.
//!
//! The digest checked is that of the **decompressed** IDX bytes: those are the widely
//! published values of the official files, and they hold whichever gzip wrapper a copy
//! came in (re-compressed copies differ in their `.gz` bytes but not in their content).

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::DataError;

/// One IDX file: its dimensions and its raw unsigned bytes.
#[derive(Clone, Debug)]
pub struct Idx {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// An expected IDX file: its name in the dataset folder and the SHA-256 of its
/// decompressed bytes.
#[derive(Clone, Copy, Debug)]
pub struct IdxFile {
    pub name: &'static str,
    pub sha256: &'static str,
}

/// Read `<dir>/<name>.gz`, or `<dir>/<name>` when only the uncompressed file exists,
/// check its digest and parse it.
pub fn read_checked(dir: &Path, file: IdxFile) -> Result<Idx, DataError> {
    let gz = dir.join(format!("{}.gz", file.name));
    let raw = dir.join(file.name);
    let (path, bytes) = if gz.is_file() {
        (gz.clone(), decompress(&gz, file)?)
    } else if raw.is_file() {
        let bytes = std::fs::read(&raw).map_err(|source| DataError::Io { path: raw.clone(), source })?;
        (raw, bytes)
    } else {
        return Err(DataError::Missing { path: gz, expected_sha256: file.sha256 });
    };
    let found = hex_sha256(&bytes);
    if found != file.sha256 {
        return Err(DataError::Corrupt { path, expected_sha256: file.sha256, found_sha256: found });
    }
    parse(&bytes).map_err(|reason| DataError::Format { path, reason })
}

fn decompress(path: &PathBuf, file: IdxFile) -> Result<Vec<u8>, DataError> {
    let compressed = std::fs::read(path).map_err(|source| DataError::Io { path: path.clone(), source })?;
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(compressed.as_slice())
        .read_to_end(&mut bytes)
        .map_err(|e| DataError::Corrupt {
            path: path.clone(),
            expected_sha256: file.sha256,
            found_sha256: format!("(not valid gzip: {e})"),
        })?;
    Ok(bytes)
}

pub fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Parse IDX bytes: `0x00 0x00 0x08 ndim`, `ndim` big-endian u32 sizes, then u8 data.
pub fn parse(bytes: &[u8]) -> Result<Idx, String> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err("missing IDX magic number".into());
    }
    if bytes[2] != 0x08 {
        return Err(format!("IDX element type 0x{:02x} is not unsigned byte (0x08)", bytes[2]));
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err("truncated IDX header".into());
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| {
            let at = 4 + 4 * i;
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize
        })
        .collect();
    let expected: usize = dims.iter().product();
    if bytes.len() - header != expected {
        return Err(format!("IDX dims {dims:?} need {expected} bytes of data, found {}", bytes.len() - header));
    }
    Ok(Idx { dims, data: bytes[header..].to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_small_idx_file() {
        let mut bytes = vec![0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3];
        bytes.extend([1, 2, 3, 4, 5, 6]);
        let idx = parse(&bytes).unwrap();
        assert_eq!(idx.dims, vec![2, 3]);
        assert_eq!(idx.data, vec![1, 2, 3, 4, 5, 6]);
        assert!(parse(&bytes[..10]).is_err());
        assert!(parse(&[0, 0, 9, 1, 0, 0, 0, 0]).unwrap_err().contains("unsigned byte"));
    }

    #[test]
    fn missing_and_corrupt_files_name_path_and_digest() {
        let dir = std::env::temp_dir().join(format!("wfpipe-idx-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = IdxFile { name: "t10k-labels-idx1-ubyte", sha256: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2" };
        let err = read_checked(&dir, file).unwrap_err().to_string();
        assert!(err.contains("t10k-labels-idx1-ubyte.gz") && err.contains(file.sha256), "{err}");
        assert!(err.contains("`wfpipe data fetch` downloads"), "a missing file names the command that fetches it: {err}");
        std::fs::write(dir.join("t10k-labels-idx1-ubyte"), [0u8, 0, 8, 1, 0, 0, 0, 1, 7]).unwrap();
        let err = read_checked(&dir, file).unwrap_err().to_string();
        assert!(err.contains("sha256") && err.contains(file.sha256), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
