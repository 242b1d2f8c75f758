//! A session as bytes, so a stream can stop in one process and continue in another.
//!
//! Layout (little-endian): magic `REMEMSS\0`, format version (u32), the model id (u32 length,
//! UTF-8, checked first so a state from another model gets that error), tokens consumed (u64),
//! tokens per step (u32), the unfinished segment (u32 count, u32 ids), the next-token logits
//! after the last full segment (u8 present, u32 count, f32s), then the memory state as
//! [`State::to_bytes`] writes it, whose header names the model it belongs to; then the FNV-1a
//! checksum (u64) of everything before it, checked before anything is read.

use burn::prelude::*;

use super::Session;
use crate::error::{Error, Result};
use crate::model::state::Reader;
use crate::model::{SegmentModel, State};
use crate::train::checkpoint::fnv1a;

const MAGIC: &[u8; 8] = b"REMEMSS\0";
/// 2 added the checksum; files of format 1 are refused with a message saying so.
const VERSION: u32 = 2;

pub(super) fn save(session: &Session) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(session.id.len() as u32).to_le_bytes());
    out.extend_from_slice(session.id.as_bytes());
    out.extend_from_slice(&session.consumed.to_le_bytes());
    out.extend_from_slice(&(session.step_len as u32).to_le_bytes());
    out.extend_from_slice(&(session.pending.len() as u32).to_le_bytes());
    for &t in &session.pending {
        out.extend_from_slice(&t.to_le_bytes());
    }
    match &session.last {
        None => out.push(0),
        Some(logits) => {
            out.push(1);
            let values: Vec<f32> = logits
                .clone()
                .into_data()
                .convert::<f32>()
                .try_to_vec()
                .map_err(|e| Error::State(format!("cannot read the logits: {e:?}")))?;
            out.extend_from_slice(&(values.len() as u32).to_le_bytes());
            for v in values {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
    out.extend_from_slice(&session.state.to_bytes(&session.id)?);
    let sum = fnv1a(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    Ok(out)
}

pub(super) fn load(session: &mut Session, bytes: &[u8]) -> Result<()> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(Error::State(
            "not a remem session state (bad magic bytes)".into(),
        ));
    }
    let mut r = Reader::new(bytes);
    r.take(MAGIC.len())?;
    let version = u32::from_le_bytes(r.array()?);
    if version == 1 {
        return Err(Error::State(format!(
            "saved by an earlier remem build (session state format 1, without a checksum; this \
             build reads {VERSION}): save the session again"
        )));
    }
    if bytes.len() < MAGIC.len() + 4 + 8 {
        return Err(Error::State("truncated state".into()));
    }
    let (body, sum) = bytes.split_at(bytes.len() - 8);
    if fnv1a(body) != u64::from_le_bytes(sum.try_into().expect("8 bytes")) {
        return Err(Error::State(
            "checksum mismatch: the state file is truncated or corrupt".into(),
        ));
    }
    if version != VERSION {
        return Err(Error::State(format!(
            "session state format {version}, this build reads {VERSION}"
        )));
    }
    let mut r = Reader::new(body);
    r.take(MAGIC.len() + 4)?;
    let id_len = u32::from_le_bytes(r.array()?) as usize;
    let id = String::from_utf8_lossy(r.take(id_len)?);
    if id != session.id {
        return Err(Error::State(format!(
            "state belongs to model `{id}`, not to this model `{}`",
            session.id
        )));
    }
    let consumed = u64::from_le_bytes(r.array()?);
    let step_len = u32::from_le_bytes(r.array()?) as usize;
    let pending_len = u32::from_le_bytes(r.array()?) as usize;
    if step_len != session.step_len || pending_len >= step_len {
        return Err(Error::State(format!(
            "saved with {step_len} tokens per step ({pending_len} pending), \
             this model reads {} per step",
            session.step_len
        )));
    }
    if !consumed.is_multiple_of(step_len as u64) {
        return Err(Error::State(format!(
            "{consumed} tokens read in full segments is not a multiple of the {step_len} tokens \
             per step: the state is damaged"
        )));
    }
    let pending: Vec<u32> = (0..pending_len)
        .map(|_| r.array().map(u32::from_le_bytes))
        .collect::<Result<_>>()?;
    let last = match r.take(1)?[0] {
        0 => None,
        _ => {
            let n = u32::from_le_bytes(r.array()?) as usize;
            if n != session.vocab_size() {
                return Err(Error::State(format!(
                    "saved logits over {n} ids, the model has {}",
                    session.vocab_size()
                )));
            }
            let values: Vec<f32> = (0..n)
                .map(|_| r.array().map(f32::from_le_bytes))
                .collect::<Result<_>>()?;
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
    // Checks the model id and the rest of the bytes, then the kind, shapes and values.
    let state = State::from_bytes(r.rest(), &session.id, &session.device)?;
    session.model.check_state(&state, 1, &session.device)?;
    session.check(&pending)?;
    session.state = state;
    session.pending = pending;
    session.last = last;
    session.consumed = consumed;
    Ok(())
}
