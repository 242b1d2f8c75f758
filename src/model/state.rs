//! The state a model carries from one segment to the next.

use burn::prelude::*;

use crate::error::{Error, Result};

/// What crosses a segment boundary.
///
/// Moved once per segment, so the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum State {
    /// Nothing: models without memory (RMT with `memory_tokens = 0`).
    Empty,
    /// Memory tokens (RMT).
    Memory {
        /// # Shapes
        /// `[batch, memory_tokens, d_model]`
        memory: Tensor<3>,
        /// How many memory transitions a gradient can cross through this tensor (0 = detached).
        attached: usize,
    },
}

/// Magic bytes at the start of a serialised state.
const MAGIC: &[u8; 8] = b"REMEMST\0";
/// Version of the serialised state format.
const VERSION: u32 = 1;

impl State {
    /// The same state cut from the autodiff graph: no gradient flows back through it.
    pub fn detach(self) -> Self {
        match self {
            State::Empty => State::Empty,
            State::Memory { memory, .. } => State::Memory {
                memory: memory.detach(),
                attached: 0,
            },
        }
    }

    /// The memory tensor, if the state has one.
    pub fn memory(&self) -> Option<&Tensor<3>> {
        match self {
            State::Empty => None,
            State::Memory { memory, .. } => Some(memory),
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
            State::Empty => out.extend_from_slice(&[0u8]),
            State::Memory { memory, .. } => {
                out.push(1);
                for d in memory.dims() {
                    out.extend_from_slice(&(d as u64).to_le_bytes());
                }
                let values = memory
                    .clone()
                    .into_data()
                    .convert::<f32>()
                    .try_to_vec::<f32>()
                    .map_err(|e| Error::State(format!("cannot read memory: {e:?}")))?;
                for v in values {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
        Ok(out)
    }

    /// Read a state written by [`State::to_bytes`] onto `device`, checking it belongs to
    /// `model_id`.
    pub fn from_bytes(bytes: &[u8], model_id: &str, device: &Device) -> Result<Self> {
        let mut r = Reader { bytes, pos: 0 };
        if r.take(8)? != MAGIC {
            return Err(Error::State("not a remem state (bad magic bytes)".into()));
        }
        let version = u32::from_le_bytes(r.array()?);
        if version != VERSION {
            return Err(Error::State(format!(
                "state format version {version}, this build reads {VERSION}"
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
            1 => {
                let mut dims = [0usize; 3];
                for d in &mut dims {
                    *d = u64::from_le_bytes(r.array()?) as usize;
                }
                let n = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
                let n = n.ok_or_else(|| Error::State("memory shape overflows".into()))?;
                let raw = r.take(
                    n.checked_mul(4)
                        .ok_or_else(|| Error::State("memory shape overflows".into()))?,
                )?;
                let values: Vec<f32> = raw
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                State::Memory {
                    memory: Tensor::from_data(TensorData::new(values, dims), device),
                    attached: 0,
                }
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

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| Error::State("truncated state".into()))?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
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
            attached: 0,
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
