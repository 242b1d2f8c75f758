//! A session as bytes, so a stream can stop in one process and continue in another.
//!
//! A safetensors file (see [`crate::io`], kind `session`): the memory state's tensors as
//! [`State::to_bytes`] names them, the unfinished segment as the `u32` tensor `session.pending`,
//! and the next-token logits after the last full segment as the f32 tensor `session.logits`
//! (present once a segment was read); the metadata holds the model id (checked first, so a
//! state from another model gets that error), the tokens consumed and the tokens per step.

use burn::prelude::*;

use super::Session;
use crate::error::{Error, Result};
use crate::io::{self, FileKind};
use crate::model::state::check_model;
use crate::model::{SegmentModel, State};

const PENDING: &str = "session.pending";
const LOGITS: &str = "session.logits";

pub(super) fn save(session: &Session) -> Result<Vec<u8>> {
    let (mut tensors, mut metadata) = session.state.to_named()?;
    metadata.insert("model_id".into(), session.id.clone());
    metadata.insert("consumed".into(), session.consumed.to_string());
    metadata.insert("step_len".into(), session.step_len.to_string());
    tensors.push((
        PENDING.to_string(),
        TensorData::new(session.pending.clone(), [session.pending.len()]),
    ));
    if let Some(logits) = &session.last {
        tensors.push((
            LOGITS.to_string(),
            logits.clone().into_data().convert::<f32>(),
        ));
    }
    io::write(FileKind::Session, &tensors, metadata).map_err(Error::State)
}

pub(super) fn load(session: &mut Session, bytes: &[u8]) -> Result<()> {
    let mut contents = io::read(bytes, FileKind::Session).map_err(Error::State)?;
    check_model(&contents, &session.id)?;
    let number = |key: &str| contents.number(key).map_err(Error::State);
    let consumed = number("consumed")?;
    let step_len = number("step_len")? as usize;
    let pending: Vec<u32> = match contents.take(PENDING) {
        Some(data) if data.dtype() == burn::tensor::DType::U32 && data.shape().len() == 1 => data
            .try_into_vec()
            .map_err(|e| Error::State(format!("{PENDING}: {e:?}")))?,
        _ => {
            return Err(Error::State(format!(
                "no one-dimensional u32 `{PENDING}` tensor (the unfinished segment)"
            )));
        }
    };
    if step_len != session.step_len || pending.len() >= step_len {
        return Err(Error::State(format!(
            "saved with {step_len} tokens per step ({} pending), this model reads {} per step",
            pending.len(),
            session.step_len
        )));
    }
    if !consumed.is_multiple_of(step_len as u64) {
        return Err(Error::State(format!(
            "{consumed} tokens read in full segments is not a multiple of the {step_len} tokens \
             per step: the state is damaged"
        )));
    }
    let last = match contents.take(LOGITS) {
        None => None,
        Some(data) => {
            let n = session.vocab_size();
            if data.dtype() != burn::tensor::DType::F32 || data.shape().as_slice() != [n] {
                return Err(Error::State(format!(
                    "saved logits of shape {:?}, the model has {n} ids",
                    data.shape().as_slice()
                )));
            }
            let values: Vec<f32> = data
                .try_into_vec()
                .map_err(|e| Error::State(format!("{LOGITS}: {e:?}")))?;
            if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
                return Err(Error::State(format!(
                    "the saved next-token logits hold {bad}: the state is damaged"
                )));
            }
            Some(Tensor::<1>::from_data(
                TensorData::new(values, [n]),
                &session.device,
            ))
        }
    };
    if last.is_some() != (consumed > 0) {
        return Err(Error::State(format!(
            "{consumed} tokens read in full segments but {} next-token logits: the state is \
             damaged",
            if last.is_some() { "saved" } else { "no" }
        )));
    }
    let state = State::take_named(&mut contents, &session.device)?;
    contents.finish().map_err(Error::State)?;
    // The kind, shapes and values.
    session.model.check_state(&state, 1, &session.device)?;
    session.check(&pending)?;
    session.state = state;
    session.pending = pending;
    session.last = last;
    session.consumed = consumed;
    Ok(())
}
