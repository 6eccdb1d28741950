//! Optimizer state on disk, so that a resumed run continues with the same momentum/RMS buffers.
//!
//! burn keys optimizer state by `ParamId`, which is random per process (a resumed model is
//! rebuilt with fresh ids), so the state is stored keyed by the parameter's position in the
//! model's fixed visiting order and re-keyed to the new ids on load.

use std::collections::HashMap;

use burn::module::ParamId;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Record, Recorder};
use burn::tensor::backend::Backend;

use crate::error::ModelError;
use crate::net::MnasNet;
use crate::weights::visit;

/// Ids of the trainable parameters in visiting order.
pub fn param_order<B: Backend>(model: &MnasNet<B>) -> Vec<ParamId> {
    let mut ids = Vec::new();
    visit(model, |_, slot| {
        use crate::weights::Slot;
        match slot {
            Slot::P4(p) => ids.push(p.id),
            Slot::P2(p) => ids.push(p.id),
            Slot::P1(p) => ids.push(p.id),
            Slot::Running(_) => {}
        }
    });
    ids
}

fn recorder() -> BinBytesRecorder<FullPrecisionSettings> {
    BinBytesRecorder::default()
}

/// A burn optimizer record: a map from parameter id to that parameter's state.
pub trait StateMap<B: Backend>:
    Record<B> + IntoIterator<Item = (ParamId, Self::State)> + FromIterator<(ParamId, Self::State)>
{
    type State;
}

impl<B: Backend, M, S> StateMap<B> for M
where
    M: Record<B> + IntoIterator<Item = (ParamId, S)> + FromIterator<(ParamId, S)>,
{
    type State = S;
}

/// Serialises an optimizer record of `model`.
pub fn encode<B: Backend, M: StateMap<B>>(record: M, model: &MnasNet<B>) -> Result<Vec<u8>, ModelError> {
    let position: HashMap<ParamId, u64> =
        param_order(model).into_iter().enumerate().map(|(i, id)| (id, i as u64)).collect();
    let keyed: M = record.into_iter().filter_map(|(id, r)| position.get(&id).map(|&i| (ParamId::from(i), r))).collect();
    Recorder::<B>::record(&recorder(), keyed, ())
        .map_err(|e| ModelError::Checkpoint(format!("cannot encode optimizer state: {e}")))
}

/// Reads what [`encode`] wrote, keyed to `model`'s parameter ids.
pub fn decode<B: Backend, M: StateMap<B>>(
    bytes: Vec<u8>,
    model: &MnasNet<B>,
    device: &B::Device,
) -> Result<M, ModelError> {
    let keyed: M = Recorder::<B>::load(&recorder(), bytes, device)
        .map_err(|e| ModelError::Checkpoint(format!("cannot read optimizer state: {e}")))?;
    let order = param_order(model);
    keyed
        .into_iter()
        .map(|(k, r)| match order.get(k.val() as usize) {
            Some(id) => Ok((*id, r)),
            None => Err(ModelError::Checkpoint(format!(
                "optimizer state names parameter #{} but the model has {}",
                k.val(),
                order.len()
            ))),
        })
        .collect()
}
