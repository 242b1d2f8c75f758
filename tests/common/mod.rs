//! Helpers shared by the integration tests.

#![allow(dead_code)]

use burn::prelude::*;
use remem::device::{self, DeviceChoice};

/// The wgpu device (lavapipe in CI), or `None` when there is no adapter.
///
/// With `CI=true` a missing adapter fails the test instead: the wgpu path must really run there.
pub fn wgpu_device() -> Option<Device> {
    match device::select(DeviceChoice::Wgpu) {
        Ok(selected) => {
            eprintln!("wgpu device: {}", selected.description);
            Some(selected.device)
        }
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but no wgpu adapter: {e} (install mesa-vulkan-drivers)")
        }
        Err(e) => {
            eprintln!("skipping the wgpu half of this test: {e}");
            None
        }
    }
}

/// Largest absolute difference between two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A tensor's values on the host.
pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec()
        .expect("f32 data")
}

/// Every value of a model state, in the state's order.
pub fn state_values(state: &remem::model::State) -> Vec<f32> {
    state.tensors().into_iter().flat_map(values).collect()
}
