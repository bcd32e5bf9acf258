//! The GGUF header (versions 2 and 3): magic, counts, metadata, tensor infos. Read with every
//! count bounded by the bytes left in the file, array contents skipped rather than kept, and
//! every tensor's bytes checked to lie inside the file, so a header cannot make a reader
//! allocate more than the file holds.

use std::collections::BTreeMap;

/// The most header bytes read (a 150k-token vocabulary with its merges takes ~10 MB).
pub const MAX_HEADER: u64 = 64 * 1024 * 1024;
/// What a reader tries first: most headers fit.
const FIRST_READ: u64 = 8 * 1024 * 1024;

/// How many bytes of a file of `file_size` to read for its header, in turn: a first read that
/// fits most headers, then the bound, for a header [`parse`] found [`Error::Truncated`].
pub fn reads(file_size: u64) -> impl Iterator<Item = u64> {
    let (first, most) = (file_size.min(FIRST_READ), file_size.min(MAX_HEADER));
    std::iter::once(first).chain((most > first).then_some(most))
}
const MAX_STRING: u64 = 16 * 1024 * 1024;
const MAX_DIMS: u32 = 4;
const MAX_DEPTH: usize = 8;
const DEFAULT_ALIGNMENT: u64 = 32;

/// A scalar metadata value (arrays are kept as their length).
#[derive(Debug, Clone, PartialEq)]
pub enum Meta {
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Bool(bool),
    Text(String),
    Array { len: u64 },
}

impl Meta {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Meta::Unsigned(n) => Some(n),
            Meta::Signed(n) => u64::try_from(n).ok(),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Meta::Text(s) => Some(s),
            _ => None,
        }
    }
}

/// One tensor: its shape in candle's order (outermost first, as PyTorch writes it; GGUF stores
/// the reverse), its ggml type and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tensor {
    pub shape: Vec<u64>,
    pub ggml_type: u32,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub version: u32,
    pub metadata: BTreeMap<String, Meta>,
    pub tensors: BTreeMap<String, Tensor>,
}

impl Header {
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.metadata.get(key).and_then(Meta::as_u64)
    }
}

/// Why a header could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The header runs past the bytes given (but not past the file): read more, up to
    /// [`MAX_HEADER`], and parse again.
    Truncated,
    Invalid(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Truncated => write!(f, "its header runs past the first {MAX_HEADER} bytes"),
            Error::Invalid(m) => f.write_str(m),
        }
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::Invalid(message.into())
}

/// Elements per block and bytes per block of the ggml types candle reads.
fn block(ggml_type: u32) -> Option<(u64, u64)> {
    Some(match ggml_type {
        0 => (1, 4),      // F32
        1 => (1, 2),      // F16
        2 => (32, 18),    // Q4_0
        3 => (32, 20),    // Q4_1
        6 => (32, 22),    // Q5_0
        7 => (32, 24),    // Q5_1
        8 => (32, 34),    // Q8_0
        9 => (32, 36),    // Q8_1
        10 => (256, 84),  // Q2_K
        11 => (256, 110), // Q3_K
        12 => (256, 144), // Q4_K
        13 => (256, 176), // Q5_K
        14 => (256, 210), // Q6_K
        15 => (256, 292), // Q8_K
        30 => (1, 2),     // BF16
        _ => return None,
    })
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    /// Whether `bytes` is the whole file (else running out means "read more").
    whole: bool,
    file_size: u64,
}

impl Cursor<'_> {
    fn take(&mut self, n: u64) -> Result<&[u8], Error> {
        let left = self.file_size.saturating_sub(self.at as u64);
        if n > left {
            return Err(invalid(format!("its header needs {n} more bytes; the file has {left}")));
        }
        let end = self.at.checked_add(usize::try_from(n).map_err(|_| Error::Truncated)?).ok_or(Error::Truncated)?;
        let Some(slice) = self.bytes.get(self.at..end) else {
            return Err(if self.whole { invalid("its header is cut short") } else { Error::Truncated });
        };
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let slice = self.take(N as u64)?;
        Ok(slice.try_into().expect("take returns N bytes; this is a bug"))
    }

    fn u32(&mut self) -> Result<u32, Error> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, Error> {
        self.array().map(u64::from_le_bytes)
    }

    fn left(&self) -> u64 {
        self.file_size.saturating_sub(self.at as u64)
    }

    fn string(&mut self) -> Result<String, Error> {
        let len = self.u64()?;
        if len > MAX_STRING {
            return Err(invalid(format!("a header string of {len} bytes exceeds the {MAX_STRING}-byte bound")));
        }
        Ok(String::from_utf8_lossy(self.take(len)?).into_owned())
    }

    fn value(&mut self, kind: u32, depth: usize) -> Result<Meta, Error> {
        Ok(match kind {
            0 => Meta::Unsigned(u64::from(self.array::<1>()?[0])),
            1 => Meta::Signed(i64::from(i8::from_le_bytes(self.array()?))),
            2 => Meta::Unsigned(u64::from(u16::from_le_bytes(self.array()?))),
            3 => Meta::Signed(i64::from(i16::from_le_bytes(self.array()?))),
            4 => Meta::Unsigned(u64::from(self.u32()?)),
            5 => Meta::Signed(i64::from(i32::from_le_bytes(self.array()?))),
            6 => Meta::Float(f64::from(f32::from_le_bytes(self.array()?))),
            7 => match self.array::<1>()?[0] {
                0 => Meta::Bool(false),
                1 => Meta::Bool(true),
                b => return Err(invalid(format!("a boolean of value {b}"))),
            },
            8 => Meta::Text(self.string()?),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(invalid("metadata arrays nest too deeply"));
                }
                let inner = self.u32()?;
                let len = self.u64()?;
                // Every element takes at least a byte: a count past the file is a lie.
                if len > self.left() {
                    return Err(invalid(format!("an array of {len} elements in {} bytes", self.left())));
                }
                for _ in 0..len {
                    self.value(inner, depth + 1)?;
                }
                Meta::Array { len }
            }
            10 => Meta::Unsigned(self.u64()?),
            11 => Meta::Signed(i64::from_le_bytes(self.array()?)),
            12 => Meta::Float(f64::from_le_bytes(self.array()?)),
            other => return Err(invalid(format!("metadata of unknown type {other}"))),
        })
    }
}

/// Parses the header from the first bytes of a file of `file_size` bytes (`bytes` may be the
/// whole file or a prefix of it).
pub fn parse(bytes: &[u8], file_size: u64) -> Result<Header, Error> {
    let whole = bytes.len() as u64 >= file_size;
    let mut c = Cursor { bytes, at: 0, whole, file_size };
    if c.take(4)? != b"GGUF" {
        return Err(invalid("is not a GGUF file (no GGUF magic)"));
    }
    let version = c.u32()?;
    if !matches!(version, 2 | 3) {
        return Err(invalid(format!("is GGUF version {version}; versions 2 and 3 are read")));
    }
    let tensor_count = c.u64()?;
    let kv_count = c.u64()?;
    // A metadata entry takes at least 13 bytes, a tensor info at least 24.
    if kv_count.saturating_mul(13).saturating_add(tensor_count.saturating_mul(24)) > c.left() {
        return Err(invalid(format!(
            "declares {tensor_count} tensors and {kv_count} metadata entries, more than its {file_size} bytes hold"
        )));
    }
    let mut metadata = BTreeMap::new();
    for _ in 0..kv_count {
        let key = c.string()?;
        let kind = c.u32()?;
        let value = c.value(kind, 0)?;
        metadata.insert(key, value);
    }
    let mut infos = Vec::new();
    for _ in 0..tensor_count {
        let name = c.string()?;
        let dims = c.u32()?;
        if dims > MAX_DIMS {
            return Err(invalid(format!("tensor {name:?} has {dims} dimensions; at most {MAX_DIMS}")));
        }
        let mut shape = (0..dims).map(|_| c.u64()).collect::<Result<Vec<_>, _>>()?;
        shape.reverse();
        let ggml_type = c.u32()?;
        let offset = c.u64()?;
        infos.push((name, shape, ggml_type, offset));
    }
    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(value) => match value.as_u64() {
            Some(a) if a.is_power_of_two() => a,
            _ => return Err(invalid(format!("general.alignment {value:?} is not a power of two"))),
        },
    };
    let data_start = (c.at as u64).div_ceil(alignment) * alignment;
    let data_len = file_size.saturating_sub(data_start);
    let mut tensors = BTreeMap::new();
    for (name, shape, ggml_type, offset) in infos {
        let (per_block, block_bytes) =
            block(ggml_type).ok_or_else(|| invalid(format!("tensor {name:?} has unknown ggml type {ggml_type}")))?;
        let values = shape.iter().try_fold(1u64, |n, d| n.checked_mul(*d));
        let bytes = values
            .filter(|v| v.is_multiple_of(per_block))
            .and_then(|v| (v / per_block).checked_mul(block_bytes))
            .ok_or_else(|| invalid(format!("tensor {name:?} has a shape {shape:?} its type cannot hold")))?;
        if offset.checked_add(bytes).is_none_or(|end| end > data_len) {
            return Err(invalid(format!(
                "tensor {name:?} ({bytes} bytes at {offset}) runs past the {data_len}-byte data section"
            )));
        }
        tensors.insert(name, Tensor { shape, ggml_type, bytes });
    }
    Ok(Header { version, metadata, tensors })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A GGUF file: metadata of u32 values and strings, F32 tensors (shapes outermost first).
    pub(crate) fn file(metadata: &[(&str, Meta)], tensors: &[(&str, &[u64])]) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend((tensors.len() as u64).to_le_bytes());
        out.extend((metadata.len() as u64).to_le_bytes());
        let string = |out: &mut Vec<u8>, s: &str| {
            out.extend((s.len() as u64).to_le_bytes());
            out.extend(s.as_bytes());
        };
        for (key, value) in metadata {
            string(&mut out, key);
            match value {
                Meta::Unsigned(n) => {
                    out.extend(4u32.to_le_bytes());
                    out.extend((*n as u32).to_le_bytes());
                }
                Meta::Text(s) => {
                    out.extend(8u32.to_le_bytes());
                    string(&mut out, s);
                }
                other => panic!("the test writer has no {other:?}"),
            }
        }
        let mut offset = 0u64;
        for (name, shape) in tensors {
            string(&mut out, name);
            out.extend((shape.len() as u32).to_le_bytes());
            for d in shape.iter().rev() {
                out.extend(d.to_le_bytes());
            }
            out.extend(0u32.to_le_bytes());
            out.extend(offset.to_le_bytes());
            offset += shape.iter().product::<u64>() * 4;
            offset = offset.div_ceil(32) * 32;
        }
        out.resize(out.len().div_ceil(32) * 32, 0);
        out.resize(out.len() + offset as usize, 0);
        out
    }

    #[test]
    fn a_small_file_reads_back() {
        let bytes = file(
            &[("general.architecture", Meta::Text("llama".into())), ("llama.block_count", Meta::Unsigned(1))],
            &[("token_embd.weight", &[10, 4]), ("blk.0.attn_q.weight", &[4, 4])],
        );
        let header = parse(&bytes, bytes.len() as u64).expect("parses");
        assert_eq!(header.get_u64("llama.block_count"), Some(1));
        assert_eq!(header.tensors["token_embd.weight"].shape, vec![10, 4]);
        assert_eq!(header.tensors["token_embd.weight"].bytes, 160);
        assert_eq!(parse(&bytes[..40], bytes.len() as u64), Err(Error::Truncated));
    }

    #[test]
    fn a_header_is_read_in_at_most_two_bounded_reads() {
        assert_eq!(reads(1000).collect::<Vec<_>>(), vec![1000]);
        assert_eq!(reads(1 << 40).collect::<Vec<_>>(), vec![FIRST_READ, MAX_HEADER]);
        assert_eq!(reads(FIRST_READ + 1).collect::<Vec<_>>(), vec![FIRST_READ, FIRST_READ + 1]);
    }

    #[test]
    fn counts_and_tensors_past_the_file_are_refused() {
        let mut bytes = file(&[], &[("w", &[4, 4])]);
        // Claim 2^40 metadata entries.
        bytes[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(parse(&bytes, bytes.len() as u64).is_err_and(|e| e.to_string().contains("more than")));

        // A tensor "w" whose dimensions follow its name and dimension count; its type after them.
        let small = file(&[], &[("w", &[4, 4])]);
        let name = small.windows(9).position(|w| w == b"\x01\0\0\0\0\0\0\0w").expect("the name");
        let dims = name + 9 + 4;
        let mut huge = small.clone();
        huge[dims..dims + 16].copy_from_slice(&[(1u64 << 20).to_le_bytes(), (1u64 << 20).to_le_bytes()].concat());
        assert!(parse(&huge, huge.len() as u64).is_err_and(|e| e.to_string().contains("runs past")));
        let mut bad_type = small;
        let at = dims + 16;
        bad_type[at..at + 4].copy_from_slice(&99u32.to_le_bytes());
        assert!(parse(&bad_type, bad_type.len() as u64).is_err_and(|e| e.to_string().contains("ggml type 99")));
    }
}
