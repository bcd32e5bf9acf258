//! The safetensors header: an 8-byte little-endian length, then a JSON table of tensors
//! (`{"name": {"dtype", "shape", "data_offsets": [begin, end]}}`, offsets into the data
//! section that follows the header).

use std::collections::BTreeMap;

use serde_json::Value;

/// Bound on a header (the format's reference implementation's own bound).
pub const MAX_HEADER: u64 = 100 * 1024 * 1024;

/// One tensor of a header, checked: a known dtype, a shape whose values fill exactly its
/// bytes, and those bytes inside the data section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: String,
    pub shape: Vec<u64>,
    /// Values in the tensor (the product of its shape).
    pub values: u64,
    pub begin: u64,
    pub end: u64,
}

impl TensorInfo {
    /// Floating-point tensors take the device's type when loaded; others keep theirs.
    pub fn is_float(&self) -> bool {
        self.dtype.starts_with('F') || self.dtype == "BF16"
    }

    /// Bytes one value of this tensor's dtype takes.
    pub fn width(&self) -> u64 {
        dtype_width(&self.dtype).unwrap_or(1)
    }
}

/// Bytes one value of a safetensors dtype takes; None for a dtype this project does not read.
pub fn dtype_width(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" => 1,
        "U16" | "I16" | "F16" | "BF16" => 2,
        "U32" | "I32" | "F32" => 4,
        "U64" | "I64" | "F64" => 8,
        _ => return None,
    })
}

/// The header's length from a file's first 8 bytes, if it is within the bound and the file.
pub fn header_length(prefix: [u8; 8], file_size: u64) -> Result<u64, String> {
    let header_len = u64::from_le_bytes(prefix);
    if header_len > MAX_HEADER {
        return Err(format!("header length {header_len} exceeds the {MAX_HEADER}-byte bound"));
    }
    if header_len.checked_add(8).is_none_or(|end| end > file_size) {
        return Err(format!("header length {header_len} runs past the end of the {file_size}-byte file"));
    }
    Ok(header_len)
}

/// Reads and checks the header of a file of `file_size` bytes from its start.
pub fn read(reader: &mut impl std::io::Read, file_size: u64) -> Result<BTreeMap<String, TensorInfo>, String> {
    let mut prefix = [0u8; 8];
    reader
        .read_exact(&mut prefix)
        .map_err(|_| format!("is {file_size} bytes, shorter than the 8-byte header length"))?;
    let len = header_length(prefix, file_size)?;
    let mut header = vec![0u8; len as usize];
    reader.read_exact(&mut header).map_err(|_| "its header is cut short".to_owned())?;
    parse_header(&header, file_size - 8 - len)
}

/// Checks a whole safetensors file held in memory (the fuzz targets' entry).
pub fn check_bytes(file: &[u8]) -> Result<BTreeMap<String, TensorInfo>, String> {
    read(&mut &file[..], file.len() as u64)
}

/// Parses a header and checks every tensor against a data section of `data_len` bytes: known
/// dtypes, byte counts matching shapes, offsets inside the data, and no two tensors sharing
/// bytes (a loader reading overlapping tensors would read one tensor's bytes as another's).
/// At most five problems are listed.
pub fn parse_header(header: &[u8], data_len: u64) -> Result<BTreeMap<String, TensorInfo>, String> {
    let table: serde_json::Map<String, Value> =
        serde_json::from_slice(header).map_err(|e| format!("header is not a JSON object: {e}"))?;
    let mut problems = Vec::new();
    let mut tensors = BTreeMap::new();
    for (name, entry) in table {
        if name == "__metadata__" {
            continue;
        }
        match tensor(&entry, data_len) {
            Ok(info) => {
                tensors.insert(name, info);
            }
            Err(m) => problems.push(format!("tensor {name:?} {m}")),
        }
        if problems.len() >= 5 {
            problems.push("…".into());
            return Err(problems.join("; "));
        }
    }
    let mut spans: Vec<(&String, &TensorInfo)> = tensors.iter().filter(|(_, t)| t.end > t.begin).collect();
    spans.sort_by_key(|(_, t)| t.begin);
    for pair in spans.windows(2) {
        let ((a, first), (b, second)) = (pair[0], pair[1]);
        if second.begin < first.end {
            problems.push(format!("tensors {a:?} and {b:?} share bytes of the data section"));
            break;
        }
    }
    if tensors.is_empty() && problems.is_empty() {
        problems.push("holds no tensors".into());
    }
    if problems.is_empty() { Ok(tensors) } else { Err(problems.join("; ")) }
}

fn tensor(entry: &Value, data_len: u64) -> Result<TensorInfo, String> {
    let dtype = entry.get("dtype").and_then(Value::as_str).ok_or("has no dtype")?;
    let width = dtype_width(dtype).ok_or_else(|| format!("has unknown dtype {dtype:?}"))?;
    let dims = entry.get("shape").and_then(Value::as_array).ok_or("has no shape")?;
    let mut shape = Vec::with_capacity(dims.len().min(8));
    let mut values: u64 = 1;
    for dim in dims {
        let dim = dim.as_u64().ok_or("has a shape that is not a list of non-negative integers")?;
        values = values.checked_mul(dim).ok_or("has a shape too large to address")?;
        shape.push(dim);
    }
    let offsets = entry.get("data_offsets").and_then(Value::as_array).ok_or("has no data_offsets")?;
    let (begin, end) = match offsets.as_slice() {
        [b, e] => (b.as_u64().ok_or("has a bad begin offset")?, e.as_u64().ok_or("has a bad end offset")?),
        _ => return Err("has data_offsets that are not [begin, end]".into()),
    };
    if begin > end || end > data_len {
        return Err(format!("has data_offsets [{begin}, {end}] outside the {data_len}-byte data section"));
    }
    if values.checked_mul(width) != Some(end - begin) {
        return Err(format!("has {} bytes for {values} {dtype} values", end - begin));
    }
    Ok(TensorInfo { dtype: dtype.to_owned(), shape, values, begin, end })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_entries_must_fit_the_data_section() {
        let ok = br#"{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#;
        let table = parse_header(ok, 16).expect("a good header");
        assert_eq!(table["w"].values, 4);
        assert!(parse_header(ok, 15).is_err_and(|m| m.contains("outside")));
        let wrong_len = br#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#;
        assert!(parse_header(wrong_len, 16).is_err_and(|m| m.contains("16 bytes for 3")));
        let bad_dtype = br#"{"w":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}}"#;
        assert!(parse_header(bad_dtype, 16).is_err_and(|m| m.contains("unknown dtype")));
        let huge = br#"{"w":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,16]}}"#;
        assert!(parse_header(huge, 16).is_err_and(|m| m.contains("too large")));
        assert!(parse_header(b"[]", 0).is_err());
        assert!(parse_header(b"{}", 0).is_err_and(|m| m.contains("no tensors")));
    }

    #[test]
    fn tensors_may_not_share_bytes() {
        let overlapping = br#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#;
        assert!(parse_header(overlapping, 16).is_err_and(|m| m.contains("share bytes")), "overlap refused");
        let adjacent = br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},"e":{"dtype":"F32","shape":[0],"data_offsets":[8,8]}}"#;
        assert_eq!(parse_header(adjacent, 16).map(|t| t.len()), Ok(3));
    }

    #[test]
    fn the_length_prefix_is_bounded_by_the_file_and_the_format() {
        assert!(header_length((MAX_HEADER + 1).to_le_bytes(), u64::MAX).is_err_and(|m| m.contains("bound")));
        assert!(header_length(100u64.to_le_bytes(), 50).is_err_and(|m| m.contains("past the end")));
        assert!(header_length(u64::MAX.to_le_bytes(), u64::MAX).is_err());
        assert!(check_bytes(&[1, 2, 3]).is_err_and(|m| m.contains("shorter")));
    }
}
