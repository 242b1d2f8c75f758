//! The state a model carries from one segment to the next.

use std::collections::BTreeMap;

use burn::prelude::*;

use crate::error::{Error, Result};
use crate::io::{self, Contents, FileKind, Named};

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
    /// ARMT's associative memory, per layer (see [`crate::nn::AssociativeMemory`]).
    #[non_exhaustive]
    Associative {
        /// Per layer, the store: values by key feature, the normaliser as the last column.
        ///
        /// # Shapes
        /// each `[batch, features, d_model + 1]`
        stores: Vec<Tensor<3>>,
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
    fn map(
        self,
        f3: &impl Fn(Tensor<3>) -> Tensor<3>,
        f2: &impl Fn(Tensor<2>) -> Tensor<2>,
    ) -> Self {
        LtmState {
            coeffs: f3(self.coeffs),
            pending: self.pending.map(f3),
            attended: self.attended.map(f2),
        }
    }
}

impl State {
    /// The state a memory-token model starts every sequence from: its learned initial memory
    /// `[M, d]` repeated over `batch` rows (nothing without memory tokens).
    pub(crate) fn initial_memory(
        memory: Option<&burn::module::Param<Tensor<2>>>,
        batch: usize,
    ) -> Self {
        match memory {
            None => State::Empty,
            Some(memory) => State::Memory {
                memory: memory.val().unsqueeze::<3>().repeat_dim(0, batch),
            },
        }
    }

    /// The same state cut from the autodiff graph: no gradient flows back through it.
    pub fn detach(self) -> Self {
        self.map(&Tensor::detach, &Tensor::detach)
    }

    /// The same state off autodiff (its tensors on the plain device): what a model run
    /// without autodiff (`model.valid()`) reads.
    pub fn inner(self) -> Self {
        self.map(&Tensor::inner, &Tensor::inner)
    }

    /// The same state on autodiff, carrying no graph (a constant to the segments after it).
    pub fn autodiff(self) -> Self {
        self.map(&Tensor::autodiff, &Tensor::autodiff)
    }

    /// Every tensor of the state through `f3` (rank 3) or `f2` (rank 2).
    fn map(
        self,
        f3: &impl Fn(Tensor<3>) -> Tensor<3>,
        f2: &impl Fn(Tensor<2>) -> Tensor<2>,
    ) -> Self {
        match self {
            State::Empty => State::Empty,
            State::Memory { memory } => State::Memory { memory: f3(memory) },
            State::Xl { cache, memory, ltm } => State::Xl {
                cache: cache.into_iter().map(f3).collect(),
                memory: memory.map(f3),
                ltm: ltm.into_iter().map(|l| l.map(f3, f2)).collect(),
            },
            State::Associative { stores } => State::Associative {
                stores: stores.into_iter().map(f3).collect(),
            },
        }
    }

    /// Every tensor of the state, in a fixed order (cache, memory tokens, then per layer the
    /// long-term memory's coefficients, pending states and attention histogram `[1, batch, bins]`;
    /// or the associative stores, one per layer).
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
            State::Associative { stores } => stores.clone(),
        }
    }

    /// The memory tensor, if the state has one.
    pub fn memory(&self) -> Option<&Tensor<3>> {
        match self {
            State::Empty => None,
            State::Memory { memory, .. } => Some(memory),
            State::Xl { memory, .. } => memory.as_ref(),
            State::Associative { .. } => None,
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
            (State::Associative { stores }, State::Associative { stores: want }) => {
                if stores.len() != want.len() {
                    return bad(format!(
                        "{} layers of associative memory, this model has {}",
                        stores.len(),
                        want.len()
                    ));
                }
                for (store, want) in stores.iter().zip(want) {
                    same("associative memory", store, want)?;
                }
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
            State::Associative { .. } => "associative-memory (ARMT)",
        }
    }

    /// Serialise the state as a safetensors file (see [`crate::io`]): its tensors (`memory`,
    /// `cache.{layer}`, `ltm.{layer}.coeffs`, `ltm.{layer}.pending`, `ltm.{layer}.attended`,
    /// `store.{layer}`) as f32, and `model_id` in the metadata.
    ///
    /// `model_id` names the model the state belongs to (see
    /// [`crate::infer::Session::model_id`]); [`State::from_bytes`] refuses a state whose id
    /// differs. Reads the tensors back to the host synchronously (not for WebGPU in a browser).
    pub fn to_bytes(&self, model_id: &str) -> Result<Vec<u8>> {
        let (tensors, mut metadata) = self.to_named()?;
        metadata.insert("model_id".into(), model_id.into());
        io::write(FileKind::State, &tensors, metadata).map_err(Error::State)
    }

    /// Read a state written by [`State::to_bytes`] onto `device`, checking it belongs to
    /// `model_id`.
    pub fn from_bytes(bytes: &[u8], model_id: &str, device: &Device) -> Result<Self> {
        let mut contents = io::read(bytes, FileKind::State).map_err(Error::State)?;
        check_model(&contents, model_id)?;
        let state = State::take_named(&mut contents, device)?;
        contents.finish().map_err(Error::State)?;
        Ok(state)
    }

    /// The state's tensors by name, read to the host, and the metadata that says how they fit
    /// together (`state`: `empty`, `memory`, `xl` or `associative`; `cache_layers`;
    /// `ltm_layers`; `store_layers`).
    pub(crate) fn to_named(&self) -> Result<(Vec<Named>, BTreeMap<String, String>)> {
        let host =
            |t: &Tensor<3>| -> Result<TensorData> { Ok(t.clone().into_data().convert::<f32>()) };
        let mut tensors = Vec::new();
        let mut metadata = BTreeMap::new();
        let kind = match self {
            State::Empty => "empty",
            State::Memory { memory } => {
                tensors.push(("memory".to_string(), host(memory)?));
                "memory"
            }
            State::Xl { cache, memory, ltm } => {
                for (i, c) in cache.iter().enumerate() {
                    tensors.push((format!("cache.{i}"), host(c)?));
                }
                if let Some(m) = memory {
                    tensors.push(("memory".to_string(), host(m)?));
                }
                for (i, layer) in ltm.iter().enumerate() {
                    tensors.push((format!("ltm.{i}.coeffs"), host(&layer.coeffs)?));
                    if let Some(p) = &layer.pending {
                        tensors.push((format!("ltm.{i}.pending"), host(p)?));
                    }
                    if let Some(a) = &layer.attended {
                        let a = a.clone().into_data().convert::<f32>();
                        tensors.push((format!("ltm.{i}.attended"), a));
                    }
                }
                metadata.insert("cache_layers".to_string(), cache.len().to_string());
                metadata.insert("ltm_layers".to_string(), ltm.len().to_string());
                "xl"
            }
            State::Associative { stores } => {
                for (i, store) in stores.iter().enumerate() {
                    tensors.push((format!("store.{i}"), host(store)?));
                }
                metadata.insert("store_layers".to_string(), stores.len().to_string());
                "associative"
            }
        };
        metadata.insert("state".to_string(), kind.to_string());
        Ok((tensors, metadata))
    }

    /// Take the tensors [`State::to_named`] wrote out of `contents`, onto `device`.
    pub(crate) fn take_named(contents: &mut Contents, device: &Device) -> Result<Self> {
        let count = |key: &str| {
            contents
                .number(key)
                .map(|n| n as usize)
                .map_err(Error::State)
        };
        let kind = contents.meta("state").map_err(Error::State)?.to_string();
        let (cache_layers, ltm_layers) = match kind.as_str() {
            "xl" => (count("cache_layers")?, count("ltm_layers")?),
            _ => (0, 0),
        };
        let store_layers = match kind.as_str() {
            "associative" => count("store_layers")?,
            _ => 0,
        };
        let mut take = |name: String| -> Result<Option<Tensor<3>>> {
            let Some(data) = contents.take(&name) else {
                return Ok(None);
            };
            if data.dtype() != burn::tensor::DType::F32 || data.shape().len() > 3 {
                return Err(Error::State(format!(
                    "state tensor `{name}` is {:?} of shape {:?}, not f32 of at most 3 dimensions",
                    data.dtype(),
                    data.shape().as_slice()
                )));
            }
            let mut dims = [1usize; 3];
            let shape = data.shape().as_slice().to_vec();
            dims[3 - shape.len()..].copy_from_slice(&shape);
            let values = data
                .try_into_vec::<f32>()
                .map_err(|e| Error::State(format!("{e:?}")))?;
            Ok(Some(Tensor::from_data(
                TensorData::new(values, dims),
                device,
            )))
        };
        let need = |t: Option<Tensor<3>>, name: &str| {
            t.ok_or_else(|| Error::State(format!("the state has no `{name}` tensor")))
        };
        Ok(match kind.as_str() {
            "empty" => State::Empty,
            "memory" => State::Memory {
                memory: need(take("memory".into())?, "memory")?,
            },
            "xl" => {
                let cache = (0..cache_layers)
                    .map(|i| need(take(format!("cache.{i}"))?, &format!("cache.{i}")))
                    .collect::<Result<Vec<_>>>()?;
                let memory = take("memory".into())?;
                let ltm = (0..ltm_layers)
                    .map(|i| {
                        let coeffs = format!("ltm.{i}.coeffs");
                        Ok(LtmState {
                            coeffs: need(take(coeffs.clone())?, &coeffs)?,
                            pending: take(format!("ltm.{i}.pending"))?,
                            attended: take(format!("ltm.{i}.attended"))?
                                .map(|a| a.squeeze_dim::<2>(0)),
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                State::Xl { cache, memory, ltm }
            }
            "associative" => State::Associative {
                stores: (0..store_layers)
                    .map(|i| need(take(format!("store.{i}"))?, &format!("store.{i}")))
                    .collect::<Result<Vec<_>>>()?,
            },
            other => return Err(Error::State(format!("unknown state kind `{other}`"))),
        })
    }
}

/// Refuse a file whose `model_id` is not `model_id`.
pub(crate) fn check_model(contents: &Contents, model_id: &str) -> Result<()> {
    let id = contents.meta("model_id").map_err(Error::State)?;
    if id != model_id {
        return Err(Error::State(format!(
            "state belongs to model `{id}`, not to this model `{model_id}`"
        )));
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
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        let err = State::from_bytes(&flipped, "rmt-a", &device).unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
    }
}
