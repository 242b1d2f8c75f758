//! The state a model carries from one segment to the next.

use burn::prelude::*;

use crate::error::{Error, Result};

/// What crosses a segment boundary.
///
/// Only models build states (`init_state`, `step`) and [`State::from_bytes`] reads them back;
/// outside remem the variants can be read but not constructed, and a state from elsewhere is
/// checked with [`crate::model::SegmentModel::check_state`] before use.
///
/// Moved once per segment, so the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum State {
    /// Nothing: models without memory (RMT with `memory_tokens = 0`).
    #[non_exhaustive]
    Empty,
    /// Memory tokens (RMT).
    #[non_exhaustive]
    Memory {
        /// # Shapes
        /// `[batch, memory_tokens, d_model]`
        memory: Tensor<3>,
    },
    /// Transformer-XL's per-layer cache, and MemTr-XL's memory tokens.
    #[non_exhaustive]
    Xl {
        /// Per layer, the cached input states of the previous segments (always detached).
        ///
        /// # Shapes
        /// each `[batch, cached, d_model]`, `cached <= mem_len`
        cache: Vec<Tensor<3>>,
        /// Memory tokens (MemTr-XL), `[batch, memory_tokens, d_model]`.
        memory: Option<Tensor<3>>,
        /// Per layer, the infinity-former's long-term memory (empty for the other models).
        ltm: Vec<LtmState>,
    },
}

/// One layer's long-term memory between segments (the infinity-former).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LtmState {
    /// Coefficients of the continuous signal, detached.
    ///
    /// # Shapes
    /// `[batch, N, d_model]`
    pub coeffs: Tensor<3>,
    /// States that left the cache in the last segment and are fitted into the signal at the
    /// start of the next (so the gate before the fit is trained), detached.
    ///
    /// # Shapes
    /// `[batch, E, d_model]`, `E <= segment_len`
    pub pending: Option<Tensor<3>>,
    /// Where the last segment's queries attended the signal: histogram mass over equal bins of
    /// `[0, 1]` (sticky sampling only), detached.
    ///
    /// # Shapes
    /// `[batch, bins]`
    pub attended: Option<Tensor<2>>,
}

impl LtmState {
    fn detach(self) -> Self {
        LtmState {
            coeffs: self.coeffs.detach(),
            pending: self.pending.map(Tensor::detach),
            attended: self.attended.map(Tensor::detach),
        }
    }
}

/// Magic bytes at the start of a serialised state.
const MAGIC: &[u8; 8] = b"REMEMST\0";
/// Version of the serialised state format (2 added the long-term memory; 1 is still read).
const VERSION: u32 = 2;

impl State {
    /// The same state cut from the autodiff graph: no gradient flows back through it.
    pub fn detach(self) -> Self {
        match self {
            State::Empty => State::Empty,
            State::Memory { memory } => State::Memory {
                memory: memory.detach(),
            },
            State::Xl { cache, memory, ltm } => State::Xl {
                cache: cache.into_iter().map(Tensor::detach).collect(),
                memory: memory.map(Tensor::detach),
                ltm: ltm.into_iter().map(LtmState::detach).collect(),
            },
        }
    }

    /// Every tensor of the state, in a fixed order (cache, memory tokens, then per layer the
    /// long-term memory's coefficients, pending states and attention histogram `[1, batch, bins]`).
    pub fn tensors(&self) -> Vec<Tensor<3>> {
        match self {
            State::Empty => Vec::new(),
            State::Memory { memory, .. } => vec![memory.clone()],
            State::Xl {
                cache, memory, ltm, ..
            } => {
                let mut all: Vec<Tensor<3>> = cache.iter().chain(memory).cloned().collect();
                for layer in ltm {
                    all.push(layer.coeffs.clone());
                    all.extend(layer.pending.clone());
                    all.extend(layer.attended.clone().map(|a| a.unsqueeze()));
                }
                all
            }
        }
    }

    /// The memory tensor, if the state has one.
    pub fn memory(&self) -> Option<&Tensor<3>> {
        match self {
            State::Empty => None,
            State::Memory { memory, .. } => Some(memory),
            State::Xl { memory, .. } => memory.as_ref(),
        }
    }

    /// Check that this state fits a model whose fresh state for a batch of `batch` is `fresh`:
    /// the same kind, every tensor of the shape the model reads (width `d`, caches up to
    /// `max_cache` states per layer, pending long-term-memory states up to `max_pending`,
    /// attention histograms over `bins`), and every value finite. A state from a file or another
    /// model gets an error naming what is wrong instead of a failure inside a step. Reads the
    /// tensors back to the host.
    pub fn check_fits(
        &self,
        fresh: &State,
        [batch, d]: [usize; 2],
        max_cache: usize,
        max_pending: usize,
        bins: usize,
    ) -> Result<()> {
        let bad = |what: String| Err(Error::State(what));
        let same = |what: &str, got: &Tensor<3>, want: &Tensor<3>| -> Result<()> {
            if got.dims() != want.dims() {
                return bad(format!(
                    "the {what} has shape {:?}, this model's is {:?}",
                    got.dims(),
                    want.dims()
                ));
            }
            Ok(())
        };
        match (self, fresh) {
            (State::Empty, State::Empty) => {}
            (State::Memory { memory }, State::Memory { memory: want }) => {
                same("memory", memory, want)?
            }
            (
                State::Xl { cache, memory, ltm },
                State::Xl {
                    memory: want_memory,
                    ltm: want_ltm,
                    ..
                },
            ) => {
                let lengths: Vec<usize> = cache.iter().map(|c| c.dims()[1]).collect();
                if cache.iter().any(|c| {
                    let [b, n, w] = c.dims();
                    b != batch || w != d || n > max_cache
                }) || lengths.windows(2).any(|w| w[0] != w[1])
                {
                    return bad(format!(
                        "the cache's layers have shapes {:?}, this model caches up to \
                         {max_cache} states of width {d} per layer",
                        cache.iter().map(|c| c.dims()).collect::<Vec<_>>()
                    ));
                }
                match (memory, want_memory) {
                    (Some(m), Some(w)) => same("memory", m, w)?,
                    (None, None) => {}
                    _ => return bad("the memory tokens do not fit this model".into()),
                }
                if ltm.len() != want_ltm.len() {
                    return bad(format!(
                        "{} layers of long-term memory, this model has {}",
                        ltm.len(),
                        want_ltm.len()
                    ));
                }
                for (layer, want) in ltm.iter().zip(want_ltm) {
                    same("long-term memory", &layer.coeffs, &want.coeffs)?;
                    if let Some(p) = &layer.pending {
                        let [b, e, w] = p.dims();
                        if b != batch || w != d || e == 0 || e > max_pending {
                            return bad(format!(
                                "pending long-term-memory states of shape {:?} do not fit \
                                 (at most {max_pending} of width {d})",
                                p.dims()
                            ));
                        }
                    }
                    if let Some(a) = &layer.attended
                        && a.dims() != [batch, bins]
                    {
                        return bad(format!(
                            "an attention histogram of shape {:?}, this model's is {:?}",
                            a.dims(),
                            [batch, bins]
                        ));
                    }
                }
            }
            _ => {
                return bad(format!(
                    "a {} state, this model keeps a {} state",
                    self.kind(),
                    fresh.kind()
                ));
            }
        }
        for tensor in self.tensors() {
            let finite = tensor
                .is_finite()
                .all()
                .into_data()
                .iter::<bool>()
                .all(|ok| ok);
            if !finite {
                return bad("the state holds infinite or NaN values".into());
            }
        }
        Ok(())
    }

    /// What kind of state this is, in words.
    pub fn kind(&self) -> &'static str {
        match self {
            State::Empty => "stateless",
            State::Memory { .. } => "memory-token (RMT)",
            State::Xl { .. } => "cache (Transformer-XL family)",
        }
    }

    /// Serialise the state: a header (format version, `model_id`, shape) then little-endian f32s.
    ///
    /// `model_id` names the model the state belongs to (see
    /// [`crate::model::ModelConfig::fingerprint`]); [`State::from_bytes`] refuses a state whose
    /// id differs. Reads the tensor back to the host synchronously (not for WebGPU in a browser).
    pub fn to_bytes(&self, model_id: &str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        let id = model_id.as_bytes();
        out.extend_from_slice(&(id.len() as u32).to_le_bytes());
        out.extend_from_slice(id);
        match self {
            State::Empty => out.push(0),
            State::Memory { memory, .. } => {
                out.push(1);
                write_tensor(&mut out, memory)?;
            }
            State::Xl {
                cache, memory, ltm, ..
            } => {
                out.push(2);
                out.extend_from_slice(&(cache.len() as u32).to_le_bytes());
                for layer in cache {
                    write_tensor(&mut out, layer)?;
                }
                out.push(memory.is_some() as u8);
                if let Some(memory) = memory {
                    write_tensor(&mut out, memory)?;
                }
                out.extend_from_slice(&(ltm.len() as u32).to_le_bytes());
                for layer in ltm {
                    write_tensor(&mut out, &layer.coeffs)?;
                    write_optional(&mut out, layer.pending.as_ref())?;
                    out.push(layer.attended.is_some() as u8);
                    if let Some(attended) = &layer.attended {
                        write_tensor(&mut out, &attended.clone().unsqueeze())?;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Read a state written by [`State::to_bytes`] onto `device`, checking it belongs to
    /// `model_id`.
    pub fn from_bytes(bytes: &[u8], model_id: &str, device: &Device) -> Result<Self> {
        let mut r = Reader::new(bytes);
        if r.take(8)? != MAGIC {
            return Err(Error::State("not a remem state (bad magic bytes)".into()));
        }
        let version = u32::from_le_bytes(r.array()?);
        if !(1..=VERSION).contains(&version) {
            return Err(Error::State(format!(
                "state format version {version}, this build reads versions 1 to {VERSION}"
            )));
        }
        let id_len = u32::from_le_bytes(r.array()?) as usize;
        let id = std::str::from_utf8(r.take(id_len)?)
            .map_err(|_| Error::State("model id is not UTF-8".into()))?;
        if id != model_id {
            return Err(Error::State(format!(
                "state belongs to model `{id}`, not to this model `{model_id}`"
            )));
        }
        let state = match r.take(1)?[0] {
            0 => State::Empty,
            1 => State::Memory {
                memory: r.tensor(device)?,
            },
            2 => {
                let layers = u32::from_le_bytes(r.array()?) as usize;
                let cache = (0..layers)
                    .map(|_| r.tensor(device))
                    .collect::<Result<Vec<_>>>()?;
                let memory = r.optional(device)?;
                // Version 1 predates the long-term memory.
                let layers = match version {
                    1 => 0,
                    _ => u32::from_le_bytes(r.array()?) as usize,
                };
                let ltm = (0..layers)
                    .map(|_| {
                        Ok(LtmState {
                            coeffs: r.tensor(device)?,
                            pending: r.optional(device)?,
                            attended: r.optional(device)?.map(|a| a.squeeze_dim::<2>(0)),
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                State::Xl { cache, memory, ltm }
            }
            tag => return Err(Error::State(format!("unknown state kind {tag}"))),
        };
        if r.pos != bytes.len() {
            return Err(Error::State(format!(
                "{} unexpected bytes after the state",
                bytes.len() - r.pos
            )));
        }
        Ok(state)
    }
}

/// A presence byte, then the tensor if present.
fn write_optional(out: &mut Vec<u8>, tensor: Option<&Tensor<3>>) -> Result<()> {
    out.push(tensor.is_some() as u8);
    match tensor {
        Some(t) => write_tensor(out, t),
        None => Ok(()),
    }
}

/// Shape (3 x u64) then little-endian f32 values.
fn write_tensor(out: &mut Vec<u8>, tensor: &Tensor<3>) -> Result<()> {
    for d in tensor.dims() {
        out.extend_from_slice(&(d as u64).to_le_bytes());
    }
    let values = tensor
        .clone()
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| Error::State(format!("cannot read a state tensor: {e:?}")))?;
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(())
}

/// Whether truncated backpropagation through time cuts the state passed into segment `next`
/// (`1..segments`) of a sequence of `segments`, for a depth of `bptt_depth` memory transitions
/// (`None`: never cut).
///
/// The cuts are counted back from the last segment, as in the RMT paper's reference code: the
/// sequence splits into windows of `k + 1` segments ending at the last one, joined inside by
/// `k` transitions and cut between. Every segment's loss then reaches back through the memory of
/// at most `k` earlier segments, and the last segment, where the tasks' answers are, through
/// exactly `min(k, segments - 1)` of them. (Counting from the first segment instead leaves the
/// last segment with no gradient through memory whenever `k + 1` divides `segments - 1`.)
///
/// ```
/// use remem::model::cuts_before;
/// // 4 segments, depth 2: the last segment reaches back to segment 1; the cut is before it.
/// let cut: Vec<bool> = (1..4).map(|s| cuts_before(s, 4, Some(2))).collect();
/// assert_eq!(cut, [true, false, false]);
/// ```
pub fn cuts_before(next: usize, segments: usize, bptt_depth: Option<usize>) -> bool {
    match bptt_depth {
        None => false,
        Some(k) => {
            // Transitions between `next` and the last segment.
            let from_end = segments.saturating_sub(1).saturating_sub(next);
            from_end % (k + 1) == k
        }
    }
}

/// Reads a serialised state (or a container around one) front to back.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Start at the first byte.
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    /// Bytes not read yet.
    pub(crate) fn rest(&self) -> &'a [u8] {
        &self.bytes[self.pos..]
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| Error::State("truncated state".into()))?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn tensor(&mut self, device: &Device) -> Result<Tensor<3>> {
        let mut dims = [0usize; 3];
        for d in &mut dims {
            *d = u64::from_le_bytes(self.array()?) as usize;
        }
        let overflow = || Error::State("state tensor shape overflows".into());
        let n = dims
            .iter()
            .try_fold(4usize, |a, &d| a.checked_mul(d))
            .ok_or_else(overflow)?;
        let values: Vec<f32> = self
            .take(n)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(Tensor::from_data(TensorData::new(values, dims), device))
    }

    /// A tensor written by `write_optional`.
    fn optional(&mut self, device: &Device) -> Result<Option<Tensor<3>>> {
        match self.take(1)?[0] {
            0 => Ok(None),
            _ => self.tensor(device).map(Some),
        }
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let device = Device::flex();
        let memory = Tensor::<3>::random([2, 3, 4], burn::tensor::Distribution::Default, &device);
        let state = State::Memory {
            memory: memory.clone(),
        };
        let bytes = state.to_bytes("rmt-a").unwrap();
        let back = State::from_bytes(&bytes, "rmt-a", &device).unwrap();
        let back = back.memory().unwrap().clone().into_data();
        assert_eq!(back, memory.into_data());

        let wrong = State::from_bytes(&bytes, "rmt-b", &device).unwrap_err();
        assert!(
            wrong.to_string().contains("belongs to model `rmt-a`"),
            "{wrong}"
        );
        let cut = State::from_bytes(&bytes[..bytes.len() - 3], "rmt-a", &device).unwrap_err();
        assert!(cut.to_string().contains("truncated"), "{cut}");
    }
}
