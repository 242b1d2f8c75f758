//! Files others can read: checkpoints, exported weights and saved states are safetensors files.
//!
//! Any safetensors reader (Python's `safetensors`, Hugging Face tooling, Burn's
//! `SafetensorsStore`) opens them: a model's weights are named by their module path
//! (`blocks.0.attn.query.weight`, f32, in Burn's layouts: a linear layer's weight is
//! `[in, out]`), and everything else is string metadata:
//!
//! | key | value |
//! |---|---|
//! | `remem.file` | `checkpoint`, `state` or `session` |
//! | `remem.format` | [`FORMAT`] (files of earlier remem builds are refused by name) |
//! | `remem.version` | the remem version that wrote the file |
//! | `remem.checksum` | FNV-1a (64 bits, hex) of every other metadata entry and every tensor, see [`digest`] |
//! | `model_id` | the model the file belongs to (architecture fingerprint and weights hash) |
//!
//! plus what each kind adds (a checkpoint's `config`, `model`, `tokenizer`, `progress` and
//! `param_ids`; a state's layout). A checkpoint written during training also holds the
//! optimiser's state, in Burn's own record format, as one `u8` tensor named
//! [`OPTIMIZER`], and a run that carries its memory across windows that memory as [`CARRIED`];
//! `remem export` leaves both out.
//!
//! Reading checks the container, the kind, the format and the checksum before anything else, so
//! a damaged or foreign file gets an error saying so instead of wrong numbers.

use std::collections::BTreeMap;
use std::collections::HashMap;

use burn::module::Module;
use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{ApplyResult, ModuleSnapshot};
use burn::tensor::{Bytes, DType, TensorData};
use safetensors::{Dtype, SafeTensors, View};

/// Version of remem's safetensors layout. 1 was remem's own container format (files starting
/// with `REMEMCK`, `REMEMSS` or `REMEMST`), which this build refuses by name.
pub const FORMAT: u32 = 2;

/// Name of the tensor holding a training checkpoint's optimiser state (Burn's record bytes).
pub const OPTIMIZER: &str = "remem.optimizer";

/// Name of the tensor holding the memory a training run carries into its next window (a saved
/// state's bytes; `train.carry_memory`).
pub const CARRIED: &str = "remem.carried";

/// What a remem safetensors file holds (its `remem.file` metadata).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A run's checkpoint or exported weights (`remem train`, `remem export`).
    Checkpoint,
    /// A model's memory state alone ([`crate::model::State::to_bytes`]).
    State,
    /// A streaming session: memory state, unfinished segment and last logits
    /// ([`crate::infer::Session::save`]).
    Session,
}

impl FileKind {
    /// The `remem.file` value.
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Checkpoint => "checkpoint",
            FileKind::State => "state",
            FileKind::Session => "session",
        }
    }
}

/// A tensor by name, as written to or read from a file.
pub type Named = (String, TensorData);

/// FNV-1a (64 bits) over `bytes`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    Fnv::default().update(bytes).0
}

/// FNV-1a, fed in pieces.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn update(mut self, bytes: &[u8]) -> Self {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }
}

/// The checksum of a file's content: FNV-1a over, in order, every metadata entry but
/// `remem.checksum` sorted by key (key, a zero byte, value, a zero byte), then every tensor
/// sorted by name (name, a zero byte, the safetensors dtype name such as `F32`, a zero byte,
/// each dimension as a little-endian u64, then its little-endian bytes). It depends only on
/// the content, not on how the header is laid out, so `scripts/check_safetensors.py` recomputes
/// it from what Python's `safetensors` reads.
pub fn digest<'a>(
    metadata: impl IntoIterator<Item = (&'a str, &'a str)>,
    tensors: impl IntoIterator<Item = (&'a str, Dtype, &'a [usize], &'a [u8])>,
) -> u64 {
    let mut entries: Vec<_> = metadata
        .into_iter()
        .filter(|(k, _)| *k != "remem.checksum")
        .collect();
    entries.sort();
    let mut h = Fnv::default();
    for (k, v) in entries {
        h = h
            .update(k.as_bytes())
            .update(&[0])
            .update(v.as_bytes())
            .update(&[0]);
    }
    let mut tensors: Vec<_> = tensors.into_iter().collect();
    tensors.sort_by_key(|t| t.0);
    for (name, dtype, shape, bytes) in tensors {
        h = h.update(name.as_bytes()).update(&[0]);
        h = h.update(format!("{dtype}").as_bytes()).update(&[0]);
        for &d in shape {
            h = h.update(&(d as u64).to_le_bytes());
        }
        h = h.update(bytes);
    }
    h.0
}

/// The hash that identifies a model's weights (in its `model_id`): [`digest`] of the weight
/// tensors alone.
pub fn weights_hash(weights: &[Named]) -> Result<u64, String> {
    let tensors = weights
        .iter()
        .map(|(n, d)| {
            Ok((
                n.as_str(),
                dtype_of(d.dtype())?,
                d.shape().as_slice(),
                d.as_bytes(),
            ))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(digest([], tensors))
}

fn dtype_of(dtype: DType) -> Result<Dtype, String> {
    Ok(match dtype {
        DType::F32 => Dtype::F32,
        DType::F64 => Dtype::F64,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        DType::U8 => Dtype::U8,
        DType::U32 => Dtype::U32,
        DType::I32 => Dtype::I32,
        DType::I64 => Dtype::I64,
        other => return Err(format!("no safetensors type for {other:?}")),
    })
}

fn dtype_from(dtype: Dtype) -> Result<DType, String> {
    Ok(match dtype {
        Dtype::F32 => DType::F32,
        Dtype::F64 => DType::F64,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::U8 => DType::U8,
        Dtype::U32 => DType::U32,
        Dtype::I32 => DType::I32,
        Dtype::I64 => DType::I64,
        other => return Err(format!("unsupported tensor type {other}")),
    })
}

/// A [`TensorData`] as a safetensors view.
struct Data<'a>(&'a TensorData, Dtype);

impl View for Data<'_> {
    fn dtype(&self) -> Dtype {
        self.1
    }
    fn shape(&self) -> &[usize] {
        self.0.shape().as_slice()
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        self.0.as_bytes().into()
    }
    fn data_len(&self) -> usize {
        self.0.as_bytes().len()
    }
}

/// Serialise `tensors` and `metadata` as a remem file of `kind`, adding the `remem.*` entries
/// (kind, format, version, checksum).
pub fn write(
    kind: FileKind,
    tensors: &[Named],
    mut metadata: BTreeMap<String, String>,
) -> Result<Vec<u8>, String> {
    metadata.insert("remem.file".into(), kind.as_str().into());
    metadata.insert("remem.format".into(), FORMAT.to_string());
    metadata.insert("remem.version".into(), env!("CARGO_PKG_VERSION").into());
    let views = tensors
        .iter()
        .map(|(n, d)| Ok((n.as_str(), Data(d, dtype_of(d.dtype())?))))
        .collect::<Result<Vec<_>, String>>()?;
    let sum = digest(
        metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        views
            .iter()
            .map(|(n, d)| (*n, d.1, d.0.shape().as_slice(), d.0.as_bytes())),
    );
    metadata.insert("remem.checksum".into(), format!("{sum:016x}"));
    safetensors::serialize(views, Some(metadata.into_iter().collect::<HashMap<_, _>>()))
        .map_err(|e| format!("cannot write safetensors: {e}"))
}

/// A remem file, read and checked.
#[derive(Debug)]
pub struct Contents {
    /// The metadata, `remem.*` entries included.
    pub metadata: BTreeMap<String, String>,
    /// The tensors by name.
    pub tensors: BTreeMap<String, TensorData>,
}

impl Contents {
    /// A metadata entry, or an error naming it.
    pub fn meta(&self, key: &str) -> Result<&str, String> {
        self.metadata
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| format!("no `{key}` in its metadata"))
    }

    /// A metadata entry parsed from JSON, or an error naming it.
    pub fn json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<T, String> {
        serde_json::from_str(self.meta(key)?)
            .map_err(|e| format!("unreadable `{key}` in its metadata: {e}"))
    }

    /// A metadata entry parsed as a number, or an error naming it.
    pub fn number(&self, key: &str) -> Result<u64, String> {
        self.meta(key)?
            .parse()
            .map_err(|_| format!("`{key}` in the metadata is not a number"))
    }

    /// Take a tensor out, if present.
    pub fn take(&mut self, name: &str) -> Option<TensorData> {
        self.tensors.remove(name)
    }

    /// An error naming a tensor nothing took out (a file holding more than its kind writes).
    pub fn finish(&self) -> Result<(), String> {
        match self.tensors.keys().next() {
            Some(name) => Err(format!("an unexpected tensor `{name}` in the file")),
            None => Ok(()),
        }
    }
}

/// Read `bytes` as a remem file of `kind`, checking the container, kind, format and checksum.
pub fn read(bytes: &[u8], kind: FileKind) -> Result<Contents, String> {
    for (magic, what) in [
        (&b"REMEMCK\0"[..], "checkpoint"),
        (b"REMEMSS\0", "session state"),
        (b"REMEMST\0", "state"),
    ] {
        if bytes.starts_with(magic) {
            return Err(format!(
                "a {what} written by an earlier remem build (remem's own format 1; this build \
                 reads safetensors files, format {FORMAT}){}",
                if what == "checkpoint" {
                    ": convert it with `remem export OLD --out NEW.safetensors`"
                } else {
                    ": save the session again with this build"
                }
            ));
        }
    }
    let file = SafeTensors::deserialize(bytes)
        .map_err(|e| format!("not a safetensors file, or a truncated or corrupt one ({e})"))?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
    let metadata: BTreeMap<String, String> = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let Some(file_kind) = metadata.get("remem.file") else {
        return Err("a safetensors file not written by remem (no `remem.file` metadata)".into());
    };
    if file_kind != kind.as_str() {
        return Err(format!(
            "a remem {file_kind} file, not a {} file",
            kind.as_str()
        ));
    }
    let format = metadata.get("remem.format").map(String::as_str);
    if format != Some(&FORMAT.to_string()) {
        return Err(format!(
            "remem file format {}, this build reads {FORMAT}",
            format.unwrap_or("(none)")
        ));
    }
    let views = file.tensors();
    let sum = digest(
        metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        views
            .iter()
            .map(|(n, v)| (n.as_str(), v.dtype(), v.shape(), v.data())),
    );
    if metadata.get("remem.checksum") != Some(&format!("{sum:016x}")) {
        return Err("checksum mismatch: the file is corrupt or was changed".into());
    }
    let tensors = views
        .into_iter()
        .map(|(name, v)| {
            let data = TensorData::try_from_bytes_vec(
                v.data().to_vec(),
                v.shape(),
                dtype_from(v.dtype())?,
            )
            .map_err(|e| format!("tensor `{name}`: {e:?}"))?;
            Ok((name, data))
        })
        .collect::<Result<_, String>>()?;
    Ok(Contents { metadata, tensors })
}

/// A module's parameters as named tensors (module paths, without enum variant names) and their
/// parameter ids (which key the optimiser's state).
pub fn module_tensors<M: Module>(
    module: &M,
) -> Result<(Vec<Named>, BTreeMap<String, u64>), String> {
    let mut ids = BTreeMap::new();
    let tensors = module
        .collect(None, None, true)
        .into_iter()
        .map(|t| {
            if let Some(id) = t.param_id {
                ids.insert(t.name.clone(), id);
            }
            let (name, dtype, shape, _, bytes) = t
                .into_parts()
                .map_err(|e| format!("cannot read a weight: {e}"))?;
            let data = TensorData::from_bytes(bytes, shape, dtype);
            Ok((name, data))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok((tensors, ids))
}

/// Load named tensors into `module`: every parameter must be given, with its shape and type, and
/// every tensor must be a parameter. `ids` restores the parameter ids the tensors were saved
/// with. Errors name the tensors at fault.
pub fn load_module<M: Module>(
    module: M,
    tensors: &[Named],
    ids: &BTreeMap<String, u64>,
) -> Result<M, String> {
    load_module_except(module, tensors, ids, "")
}

/// [`load_module`], where parameters whose names start with `kept` (when not empty) may be
/// left out: they keep the values `module` has (a frozen backbone read from its own file).
pub fn load_module_except<M: Module>(
    module: M,
    tensors: &[Named],
    ids: &BTreeMap<String, u64>,
    kept: &str,
) -> Result<M, String> {
    let (module, missing) = load_module_adding(module, tensors, ids)?;
    let missing: Vec<String> = missing
        .into_iter()
        .filter(|n| kept.is_empty() || !n.starts_with(kept))
        .collect();
    if !missing.is_empty() {
        return Err(format!("missing weights: {}", name_list(missing)));
    }
    Ok(module)
}

/// `tensors` into `module` where `module` may have tensors that `tensors` lacks (a model with
/// new parts, fine-tuned from one without them): those keep `module`'s own values, and their
/// names are returned. Wrongly shaped tensors and tensors `module` does not have are errors.
pub fn load_module_adding<M: Module>(
    mut module: M,
    tensors: &[Named],
    ids: &BTreeMap<String, u64>,
) -> Result<(M, Vec<String>), String> {
    let pack = tensors
        .iter()
        .map(|(name, data)| {
            PackTensor::new(
                name.clone(),
                data.dtype(),
                data.shape().clone(),
                ids.get(name).copied(),
                Bytes::from_bytes_vec(data.as_bytes().to_vec()),
            )
        })
        .collect();
    let result: ApplyResult = module.apply(pack, None, None, true);
    if !result.errors.is_empty() {
        return Err(name_list(
            result.errors.iter().map(|e| e.to_string()).collect(),
        ));
    }
    if !result.unused.is_empty() {
        return Err(format!(
            "weights this model does not have: {}",
            name_list(result.unused)
        ));
    }
    Ok((module, result.missing.into_iter().map(|(n, _)| n).collect()))
}

/// Up to four names, then how many more: the tensors an error is about.
pub(crate) fn name_list(names: Vec<String>) -> String {
    let n = names.len();
    let mut shown = names.into_iter().take(4).collect::<Vec<_>>().join(", ");
    if n > 4 {
        shown.push_str(&format!(" and {} more", n - 4));
    }
    shown
}
