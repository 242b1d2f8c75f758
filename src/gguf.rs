//! GGUF files (llama.cpp's format, version 2 and 3): the metadata, the tensor table, and tensors
//! dequantised to f32 at load (F32, F16, BF16, Q4_0, Q4_1, Q8_0).
//!
//! Layout (little-endian): `GGUF`, version (u32), tensor count (u64), metadata count (u64); each
//! metadata entry a key (u64 length + UTF-8), a type (u32) and a value; each tensor a name, its
//! number of dimensions (u32), the dimensions (u64, innermost first), a type (u32) and an offset
//! (u64) into the data section, which starts at the next multiple of `general.alignment` (32 by
//! default) after the table. Quantised types store blocks of 32 weights:
//!
//! | type | block | weight `j` |
//! |---|---|---|
//! | Q4_0 | f16 `d`, 16 bytes of nibbles | `d * (q_j - 8)` |
//! | Q4_1 | f16 `d`, f16 `m`, 16 bytes of nibbles | `d * q_j + m` |
//! | Q8_0 | f16 `d`, 32 signed bytes | `d * q_j` |
//!
//! where the low nibbles of the 16 bytes are weights 0-15 and the high nibbles weights 16-31.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::{TensorData, bf16, f16};

use crate::error::{Error, Result};

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Any unsigned integer type.
    Uint(u64),
    /// Any signed integer type.
    Int(i64),
    /// f32 or f64.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A UTF-8 string.
    Str(String),
    /// An array of values.
    Array(Vec<Value>),
}

impl Value {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::Uint(v) => Some(v),
            Value::Int(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Float(v) => Some(v),
            Value::Uint(v) => Some(v as f64),
            Value::Int(v) => Some(v as f64),
            _ => None,
        }
    }

    /// The value as a string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an array, if it is one.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// A tensor type remem can dequantise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 32-bit floats.
    F32,
    /// 16-bit floats.
    F16,
    /// bfloat16.
    Bf16,
    /// 4-bit, scale only.
    Q4_0,
    /// 4-bit, scale and minimum.
    Q4_1,
    /// 8-bit, scale only.
    Q8_0,
}

impl Kind {
    /// The GGML type id's kind, or the type's name when remem cannot read it.
    fn from_id(id: u32) -> std::result::Result<Self, String> {
        Ok(match id {
            0 => Kind::F32,
            1 => Kind::F16,
            2 => Kind::Q4_0,
            3 => Kind::Q4_1,
            8 => Kind::Q8_0,
            30 => Kind::Bf16,
            other => {
                let names = [
                    (6, "Q5_0"),
                    (7, "Q5_1"),
                    (9, "Q8_1"),
                    (10, "Q2_K"),
                    (11, "Q3_K"),
                    (12, "Q4_K"),
                    (13, "Q5_K"),
                    (14, "Q6_K"),
                    (15, "Q8_K"),
                    (24, "I8"),
                    (25, "I16"),
                    (26, "I32"),
                    (27, "I64"),
                    (28, "F64"),
                ];
                let name = names.iter().find(|(i, _)| *i == other).map(|(_, n)| *n);
                return Err(match name {
                    Some(n) => n.to_string(),
                    None => format!("type {other}"),
                });
            }
        })
    }

    /// Weights per block and bytes per block.
    fn block(self) -> (usize, usize) {
        match self {
            Kind::F32 => (1, 4),
            Kind::F16 | Kind::Bf16 => (1, 2),
            Kind::Q4_0 => (32, 18),
            Kind::Q4_1 => (32, 20),
            Kind::Q8_0 => (32, 34),
        }
    }
}

/// One entry of the tensor table.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// The tensor's name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions as GGUF lists them, innermost (contiguous) first.
    pub dims: Vec<usize>,
    /// Its type, or the name of a type remem cannot dequantise.
    pub kind: std::result::Result<Kind, String>,
    /// Byte offset into the data section.
    offset: usize,
    /// Bytes it occupies.
    len: usize,
}

impl TensorInfo {
    /// The row-major shape (the GGUF dimensions reversed): a `[576, 1536]` GGUF matrix is
    /// `[1536, 576]`, 1536 rows of 576 contiguous weights.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().copied().collect()
    }
}

/// A GGUF file read into memory.
#[derive(Debug)]
pub struct Gguf {
    /// The format version (2 or 3).
    pub version: u32,
    /// The metadata by key.
    pub metadata: BTreeMap<String, Value>,
    /// The tensor table, in file order.
    pub tensors: Vec<TensorInfo>,
    bytes: Vec<u8>,
    data: usize,
    name: String,
}

/// Reads the header front to back; every read is bounds-checked.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or("truncated header")?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    /// A count that must fit what is left of the file (`min_size` bytes per item).
    fn count(&mut self, min_size: usize) -> std::result::Result<usize, String> {
        let n = self.u64()?;
        let left = (self.bytes.len() - self.pos) / min_size.max(1);
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= left)
            .ok_or_else(|| format!("a count of {n} runs past the end of the file"))
    }
    fn string(&mut self) -> std::result::Result<String, String> {
        let n = self.count(1)?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "a string is not UTF-8".into())
    }
    fn value(&mut self, kind: u32, depth: usize) -> std::result::Result<Value, String> {
        let take = |c: &mut Self, n: usize| -> std::result::Result<[u8; 8], String> {
            let mut a = [0u8; 8];
            a[..n].copy_from_slice(c.take(n)?);
            Ok(a)
        };
        Ok(match kind {
            0 => Value::Uint(take(self, 1)?[0] as u64),
            1 => Value::Int(take(self, 1)?[0] as i8 as i64),
            2 => Value::Uint(u16::from_le_bytes(take(self, 2)?[..2].try_into().expect("2")) as u64),
            3 => Value::Int(i16::from_le_bytes(take(self, 2)?[..2].try_into().expect("2")) as i64),
            4 => Value::Uint(self.u32()? as u64),
            5 => Value::Int(self.u32()? as i32 as i64),
            6 => Value::Float(f32::from_bits(self.u32()?) as f64),
            7 => Value::Bool(take(self, 1)?[0] != 0),
            8 => Value::Str(self.string()?),
            9 if depth < 4 => {
                let inner = self.u32()?;
                let n = self.count(1)?;
                Value::Array(
                    (0..n)
                        .map(|_| self.value(inner, depth + 1))
                        .collect::<std::result::Result<_, _>>()?,
                )
            }
            10 => Value::Uint(self.u64()?),
            11 => Value::Int(self.u64()? as i64),
            12 => Value::Float(f64::from_bits(self.u64()?)),
            other => return Err(format!("unknown metadata type {other}")),
        })
    }
}

/// Whether the file at `path` starts with GGUF's magic bytes (`GGUF`).
pub fn is_gguf(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut magic = [0u8; 4];
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    Ok(file.read_exact(&mut magic).is_ok() && &magic == b"GGUF")
}

impl Gguf {
    /// Read a GGUF file.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::parse(bytes, &path.display().to_string())
    }

    /// Parse the bytes of a GGUF file (`name` names it in errors). Checks the header, the
    /// tensor table and that every tensor lies inside the file.
    pub fn parse(bytes: Vec<u8>, name: &str) -> Result<Self> {
        let bad = |reason: String| Error::Backbone {
            path: name.into(),
            reason,
        };
        if !bytes.starts_with(b"GGUF") {
            return Err(bad("not a GGUF file (no `GGUF` magic bytes)".into()));
        }
        let mut c = Cursor {
            bytes: &bytes,
            pos: 4,
        };
        let version = c.u32().map_err(bad)?;
        if !(2..=3).contains(&version) {
            return Err(bad(format!(
                "GGUF version {version}, remem reads versions 2 and 3"
            )));
        }
        let n_tensors = c.count(24).map_err(bad)?;
        let n_meta = c.count(12).map_err(bad)?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_meta {
            let key = c.string().map_err(bad)?;
            let kind = c.u32().map_err(bad)?;
            let value = c
                .value(kind, 0)
                .map_err(|e| bad(format!("metadata `{key}`: {e}")))?;
            metadata.insert(key, value);
        }
        let mut tensors = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = c.string().map_err(bad)?;
            let rank = c.u32().map_err(bad)? as usize;
            if rank > 4 {
                return Err(bad(format!("tensor `{name}` has {rank} dimensions")));
            }
            let dims = (0..rank)
                .map(|_| c.u64().map(|d| d as usize))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(bad)?;
            let kind = Kind::from_id(c.u32().map_err(bad)?);
            let offset = c.u64().map_err(bad)? as usize;
            let elements = dims
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .ok_or_else(|| bad(format!("tensor `{name}`: its size overflows")))?;
            let len = match &kind {
                Ok(k) => {
                    let (per, size) = k.block();
                    if !elements.is_multiple_of(per) {
                        return Err(bad(format!(
                            "tensor `{name}`: {elements} weights are not whole blocks of {per}"
                        )));
                    }
                    elements / per * size
                }
                Err(_) => 0,
            };
            tensors.push(TensorInfo {
                name,
                dims,
                kind,
                offset,
                len,
            });
        }
        let alignment = metadata
            .get("general.alignment")
            .and_then(Value::as_u64)
            .unwrap_or(32)
            .max(1) as usize;
        let data = c.pos.div_ceil(alignment) * alignment;
        for t in &tensors {
            let end = data
                .checked_add(t.offset)
                .and_then(|s| s.checked_add(t.len));
            if end.is_none_or(|e| e > bytes.len()) {
                return Err(bad(format!(
                    "tensor `{}` runs past the end of the file (truncated?)",
                    t.name
                )));
            }
        }
        Ok(Gguf {
            version,
            metadata,
            tensors,
            bytes,
            data,
            name: name.to_string(),
        })
    }

    /// A metadata value, or an error naming the key.
    pub fn get(&self, key: &str) -> Result<&Value> {
        self.metadata.get(key).ok_or_else(|| Error::Backbone {
            path: self.name.clone().into(),
            reason: format!("no `{key}` in its metadata"),
        })
    }

    /// The tensor table's entry for `name`.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Tensor `name` dequantised to f32, in its row-major shape ([`TensorInfo::shape`]).
    pub fn tensor(&self, name: &str) -> Result<TensorData> {
        let bad = |reason: String| Error::Backbone {
            path: self.name.clone().into(),
            reason,
        };
        let info = self
            .info(name)
            .ok_or_else(|| bad(format!("no tensor `{name}`")))?;
        let kind = info.kind.clone().map_err(|t| {
            bad(format!(
                "tensor `{name}` is {t}, which remem cannot dequantise (it reads F32, F16, BF16, \
                 Q4_0, Q4_1 and Q8_0)"
            ))
        })?;
        let start = self.data + info.offset;
        let raw = &self.bytes[start..start + info.len];
        Ok(TensorData::new(dequantise(kind, raw), info.shape()))
    }
}

/// The f32 weights of `raw`, a whole number of `kind`'s blocks.
pub fn dequantise(kind: Kind, raw: &[u8]) -> Vec<f32> {
    let half = |b: &[u8]| f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
    match kind {
        Kind::F32 => raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Kind::F16 => raw.chunks_exact(2).map(half).collect(),
        Kind::Bf16 => raw
            .chunks_exact(2)
            .map(|b| bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
            .collect(),
        Kind::Q8_0 => raw
            .chunks_exact(34)
            .flat_map(|b| {
                let d = half(&b[..2]);
                b[2..].iter().map(move |&q| d * (q as i8) as f32)
            })
            .collect(),
        Kind::Q4_0 | Kind::Q4_1 => {
            let (size, offset) = if kind == Kind::Q4_0 { (18, 2) } else { (20, 4) };
            let mut out = Vec::with_capacity(raw.len() / size * 32);
            for b in raw.chunks_exact(size) {
                let d = half(&b[..2]);
                let nibbles = &b[offset..];
                let weight = |q: u8| match kind {
                    Kind::Q4_0 => d * (q as f32 - 8.0),
                    _ => d * q as f32 + half(&b[2..4]),
                };
                out.extend(nibbles.iter().map(|&q| weight(q & 0x0f)));
                out.extend(nibbles.iter().map(|&q| weight(q >> 4)));
            }
            out
        }
    }
}
