//! Kernel launches counted from the runtime: what a training step or a streaming segment
//! dispatches on wgpu, through the launch observer of Burn's runtime (CubeCL).
//!
//! Burn's fusion issues kernels lazily, when a result is read or the device is synced, so a
//! count covers whole units of work that end in a sync. The runtime has one observer slot per
//! process: a count sees every launch in the process while it runs, and two counts at once
//! would take the slot from each other. The CPU (flex) launches no kernels; there every count
//! is `None`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use burn::cubecl::logging::{LaunchObservation, LaunchObserver};
use burn::prelude::*;
use serde::Serialize;

use crate::error::Result;

/// Kernels launched over some units of work, by kernel name.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Launches {
    /// Units of work counted (segments or steps).
    pub units: usize,
    /// Kernels launched in all, per unit.
    pub per_unit: f64,
    /// Distinct kernel names among them (one name can cover several compiled variants).
    pub distinct: usize,
    /// Launches per unit by kernel (short names), most launched first.
    pub by_kernel: Vec<(String, f64)>,
}

#[derive(Default)]
struct Counter(Mutex<HashMap<&'static str, usize>>);

impl LaunchObserver for Counter {
    fn launched(&self, kernel: &'static str) {
        *self.0.lock().unwrap().entry(kernel).or_default() += 1;
    }
}

/// Run `unit` `units` times on `device` and count the kernels they launch (the device is
/// synced before and after, so the count is theirs). `None` on the CPU.
pub fn count(
    device: &Device,
    units: usize,
    mut unit: impl FnMut() -> Result<()>,
) -> Result<Option<Launches>> {
    if crate::device::is_cpu(device) {
        for _ in 0..units {
            unit()?;
        }
        return Ok(None);
    }
    let _ = device.sync();
    let counter = Arc::new(Counter::default());
    {
        let _watching = LaunchObservation::new(counter.clone());
        for _ in 0..units {
            unit()?;
        }
        let _ = device.sync();
    }
    let counts = counter.0.lock().unwrap();
    let per = |n: usize| n as f64 / units.max(1) as f64;
    let mut by_kernel: Vec<(String, f64)> = counts
        .iter()
        .map(|(name, n)| (short(name), per(*n)))
        .collect();
    by_kernel.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(Some(Launches {
        units,
        per_unit: per(counts.values().sum()),
        distinct: counts.len(),
        by_kernel,
    }))
}

/// A kernel's type name without its module path and generic arguments' paths:
/// `burn_cubecl::kernel::binary::KernelBinop<burn_cubecl::kernel::binary::AddOp>` ->
/// `KernelBinop<AddOp>`.
fn short(name: &str) -> String {
    let (head, args) = match name.split_once('<') {
        Some((h, a)) => (h, Some(a.trim_end_matches('>'))),
        None => (name, None),
    };
    let last = |s: &str| s.rsplit("::").next().unwrap_or(s).trim().to_string();
    match args {
        // The first argument names the variant (the operator of a binary kernel).
        Some(a) => format!("{}<{}>", last(head), last(a.split(',').next().unwrap_or(a))),
        None => last(head),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_names_are_shortened() {
        assert_eq!(
            short("burn_cubecl::kernel::binary::KernelBinop<burn_cubecl::kernel::binary::AddOp>"),
            "KernelBinop<AddOp>"
        );
        assert_eq!(short("remem::attention"), "attention");
    }

    #[test]
    fn the_cpu_launches_no_kernels() {
        let mut ran = 0;
        let counted = count(&Device::flex(), 3, || {
            ran += 1;
            Ok(())
        })
        .unwrap();
        assert!(counted.is_none());
        assert_eq!(ran, 3, "the work still runs");
    }
}
