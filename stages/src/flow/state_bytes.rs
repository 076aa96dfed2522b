//! Optimizer-like state as little-endian bytes: a step counter, then float arrays of a
//! known length. Checkpoints restore such state bit for bit.

/// The counter, then every value of `arrays` in order.
pub fn encode(counter: u64, arrays: &[&[f32]]) -> Vec<u8> {
    let len: usize = arrays.iter().map(|a| a.len()).sum();
    let mut out = Vec::with_capacity(8 + 4 * len);
    out.extend_from_slice(&counter.to_le_bytes());
    arrays.iter().flat_map(|a| a.iter()).for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    out
}

/// The counter and `arrays` arrays of `len` values each, as written by [`encode`].
pub fn decode(bytes: &[u8], arrays: usize, len: usize, what: &str) -> Result<(u64, Vec<Vec<f32>>), String> {
    let expected = 8 + 4 * arrays * len;
    if bytes.len() != expected {
        return Err(format!("{what} has {} bytes, expected {expected}", bytes.len()));
    }
    let counter = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    let floats: Vec<f32> =
        bytes[8..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect();
    Ok((counter, floats.chunks(len.max(1)).map(<[f32]>::to_vec).take(arrays).collect()))
}
