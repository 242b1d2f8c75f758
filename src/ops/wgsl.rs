//! Launching remem's hand-written WGSL kernels (`shaders/*.wgsl`) through Burn's wgpu runtime,
//! and the once-per-device check that decides whether they run at all.
//!
//! A kernel is WGSL text with `{{ name }}` placeholders for the sizes it is compiled for (a
//! head width, a workgroup size); [`Wgsl`] fills them once per distinct filling and hands the
//! text to the runtime, which compiles it once and caches the pipeline. Buffers bind in the
//! order the shader declares them, `@group(0) @binding(0..)`.
//!
//! Each operation checks its kernel once per device ([`check_once`]): it runs the kernel on a
//! small input, the reference on the same input on the CPU, and compares them. An adapter that cannot compile or launch the
//! kernel, or that gets a different answer, takes the reference path from then on; the reason is
//! kept for [`fallbacks`], which the command line prints.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use burn::backend::TensorMetadata;
use burn::backend::wgpu::CubeTensor;
use burn::cubecl::ir::{UIntKind, metadata::Info};
use burn::cubecl::prelude::*;
use burn::cubecl::server::{Handle, KernelArguments};
use burn::cubecl::{CubeKernel, PrecompiledSource};
use burn::prelude::Shape;
use burn::tensor::DType;

/// A WGSL kernel with its placeholders filled.
pub(crate) struct Wgsl {
    name: &'static str,
    source: Arc<str>,
    id: KernelId,
    cube_dim: CubeDim,
}

/// The filled sources by kernel name and values: a launch builds its text once, not on every
/// dispatch (a training step dispatches hundreds of these kernels).
type Sources = HashMap<(&'static str, Vec<(&'static str, usize)>), Arc<str>>;
static SOURCES: Mutex<Option<Sources>> = Mutex::new(None);

impl Wgsl {
    /// `parts` joined by new lines (shared fragments first, then the kernel), with each
    /// `{{ key }}` replaced by its value, run by `workgroup` invocations per workgroup (the
    /// shader's own `@workgroup_size` must agree). `name` names the kernel in the runtime's
    /// logs and in launch counts, and with `values` keys the filled text, which is built once:
    /// a name with the same values always stands for the same parts (a launcher that chooses
    /// among parts puts its choice in the values).
    pub(crate) fn new(
        name: &'static str,
        parts: &[&'static str],
        values: &[(&'static str, usize)],
        workgroup: u32,
    ) -> Self {
        let key = (name, values.to_vec());
        let source = SOURCES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(HashMap::new)
            .entry(key.clone())
            .or_insert_with(|| fill(name, parts, values))
            .clone();
        Self {
            name,
            source,
            id: KernelId::new::<Self>().info(key),
            cube_dim: CubeDim::new_1d(workgroup),
        }
    }

    /// Launch on `count` workgroups with `buffers` bound in order.
    pub(crate) fn launch(self, client: &Client, count: CubeCount, buffers: Vec<Handle>) {
        let arguments =
            KernelArguments::new().with_buffers(buffers.into_iter().map(|h| h.binding()).collect());
        client.launch(Box::new(self), count, arguments);
    }
}

impl KernelMetadata for Wgsl {
    fn name(&self) -> &'static str {
        self.name
    }

    fn id(&self) -> KernelId {
        self.id.clone()
    }

    fn address_type(&self) -> ElemType {
        UIntKind::U32.into()
    }
}

impl CubeKernel for Wgsl {
    fn define(&self) -> KernelDefinition {
        // The text is the kernel; the definition only carries the launch settings.
        let settings =
            KernelSettings::new(self.cube_dim.0, ExecutionMode::Checked, AddressType::U32);
        KernelDefinition {
            body: Scope::root(settings.clone()),
            settings,
            info: Info::default(),
        }
    }

    fn source(&self) -> Option<PrecompiledSource> {
        Some(PrecompiledSource {
            source: self.source.to_string(),
            entrypoint_name: "main".to_string(),
            lang: "wgsl",
        })
    }
}

/// `parts` joined by new lines, each `{{ key }}` replaced by its value.
fn fill(name: &str, parts: &[&str], values: &[(&str, usize)]) -> Arc<str> {
    let mut source = parts.join("\n");
    for (key, value) in values {
        source = source.replace(&format!("{{{{ {key} }}}}"), &value.to_string());
    }
    assert!(
        !source.contains("{{"),
        "{name}: a placeholder was left unfilled"
    );
    source.into()
}

/// Whether `device` is a wgpu device, where remem's WGSL kernels can serve.
pub(crate) fn on_wgpu(device: &burn::prelude::Device) -> bool {
    use burn::backend::DispatchDevice;
    matches!(device.clone().inner().as_dispatch(), DispatchDevice::Cube(cube)
        if cube.runtime() == burn::cubecl::RuntimeId::Wgpu)
}

/// `values` as a read-only storage buffer of `u32` (sizes, and `f32`s by their bits).
pub(crate) fn info(client: &Client, values: &[u32]) -> Handle {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    client.create_from_slice(&bytes)
}

/// A new contiguous `f32` tensor of `shape` on the device of `like`, its contents unset.
pub(crate) fn empty_like(like: &CubeTensor, shape: Shape) -> CubeTensor {
    let handle = like.client.empty(shape.num_elements() * 4);
    CubeTensor::new_contiguous(
        like.client.clone(),
        like.device.clone(),
        shape,
        handle,
        DType::F32,
    )
}

/// A row-wise kernel's source: the shared workgroup sum (`shaders/workgroup_sum.wgsl`) and row
/// sizes (`shaders/row_sizes.wgsl`), then the kernel (WGSL has no includes).
pub(crate) fn row_kernel(kernel: &'static str) -> [&'static str; 3] {
    [
        include_str!("../../shaders/workgroup_sum.wgsl"),
        include_str!("../../shaders/row_sizes.wgsl"),
        kernel,
    ]
}

/// Whether the row-wise kernel checked under `kernel` serves `x`: [`serves`], a non-empty
/// last axis and tensor, and the check on this device passed (or has not run).
pub(crate) fn serves_rows(kernel: &'static str, x: &CubeTensor) -> bool {
    let shape = x.shape();
    let d = shape[shape.num_dims() - 1];
    serves(x) && d > 0 && shape.num_elements() > 0 && !failed(kernel, &x.device)
}

/// Whether hand-written WGSL can serve `tensor`: an `f32` tensor on the wgpu runtime.
pub(crate) fn serves(tensor: &CubeTensor) -> bool {
    tensor.dtype == DType::F32 && tensor.device.runtime() == burn::cubecl::RuntimeId::Wgpu
}

/// One kernel's check on one device, and what it found.
type Checked = (&'static str, burn::cubecl::Device, Result<(), String>);

/// Outcome of each kernel's check, by (kernel, device).
static CHECKED: Mutex<Vec<Checked>> = Mutex::new(Vec::new());

/// `tensor`'s values on the host, for a check: an error if the kernel behind it did not run.
pub(crate) fn read<const D: usize>(tensor: burn::prelude::Tensor<D>) -> Result<Vec<f32>, String> {
    tensor
        .try_into_data()
        .map_err(|e| format!("the kernel did not run: {e:?}"))?
        .try_into_vec::<f32>()
        .map_err(|e| format!("{e:?}"))
}

/// `Ok` when `got` equals `want` within `1e-4`, else an error naming `what` and the difference.
pub(crate) fn agrees(what: &str, got: &[f32], want: &[f32]) -> Result<(), String> {
    let diff = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    if got.len() != want.len() || diff.is_nan() || diff >= 1e-4 {
        return Err(format!(
            "its {what} differs from the reference by {diff} on a test input"
        ));
    }
    Ok(())
}

/// On a wgpu `device`, run `check` for `kernel` there unless it ran before ([`check_once`]),
/// handing it the device without autodiff. Elsewhere nothing; nor in a browser, where results
/// cannot be read back synchronously (there the kernels run unchecked).
pub(crate) fn check_on(
    kernel: &'static str,
    device: &burn::prelude::Device,
    check: impl FnOnce(&burn::prelude::Device) -> Result<(), String>,
) {
    use burn::backend::DispatchDevice;
    if cfg!(target_family = "wasm") {
        return;
    }
    let device = device.clone().inner();
    if let DispatchDevice::Cube(cube) = device.as_dispatch() {
        check_once(kernel, cube, || check(&device));
    }
}

/// Run `check` for `kernel` on `device` unless it ran before: it launches the kernel on a small
/// input and compares it with the reference, `Err` saying how it failed. Called from the tensor
/// level, never from inside a backend's operation (the check reads results back).
pub(crate) fn check_once(
    kernel: &'static str,
    device: &burn::cubecl::Device,
    check: impl FnOnce() -> Result<(), String>,
) {
    let seen = CHECKED
        .lock()
        .unwrap()
        .iter()
        .any(|(k, d, _)| *k == kernel && d == device);
    if seen {
        return;
    }
    // Checked outside the lock: the check launches the kernel, which asks [`failed`].
    let found = check();
    CHECKED
        .lock()
        .unwrap()
        .push((kernel, device.clone(), found));
}

/// Whether `kernel` failed its check on `device` (not yet checked: no), or is turned off by
/// [`turned_off`]: either way the reference path serves.
pub(crate) fn failed(kernel: &'static str, device: &burn::cubecl::Device) -> bool {
    turned_off(kernel)
        || CHECKED
            .lock()
            .unwrap()
            .iter()
            .any(|(k, d, found)| *k == kernel && d == device && found.is_err())
}

/// Whether the environment variable `REMEM_WGSL_OFF` turns `kernel` off: a comma-separated
/// list of kernel names without the `remem::` prefix, each also turning off the kernels whose
/// names it begins (`attention` covers `attention_backward` and `attention_backward_key`), or
/// `all`. For comparing a kernel with the reference path on one machine, and as a way round a
/// kernel that misbehaves on some adapter without failing its check. Read once per process.
fn turned_off(kernel: &str) -> bool {
    matches_off(turned_off_names(), kernel)
}

/// The names `REMEM_WGSL_OFF` gives (see [`turned_off`]), empty when it is unset; the command
/// line prints them, so a run says which kernels it left out.
pub fn turned_off_names() -> &'static [String] {
    static OFF: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    OFF.get_or_init(|| {
        std::env::var("REMEM_WGSL_OFF")
            .map(|v| parse_off(&v))
            .unwrap_or_default()
    })
}

/// `REMEM_WGSL_OFF`'s names, trimmed, empty ones dropped.
fn parse_off(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .collect()
}

/// Whether any of `off` turns `kernel` off (see [`turned_off`]).
fn matches_off(off: &[String], kernel: &str) -> bool {
    let short = kernel.trim_start_matches("remem::");
    off.iter()
        .any(|name| name == "all" || short.starts_with(name.as_str()))
}

/// The kernels that failed their check, with the reason, as `kernel: reason` lines; the
/// reference path runs in their place.
pub fn fallbacks() -> Vec<String> {
    let mut seen = HashMap::new();
    for (kernel, _, found) in CHECKED.lock().unwrap().iter() {
        if let Err(reason) = found {
            seen.entry(*kernel).or_insert_with(|| reason.clone());
        }
    }
    let mut lines: Vec<String> = seen.into_iter().map(|(k, r)| format!("{k}: {r}")).collect();
    lines.sort();
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remem_wgsl_off_names_kernels_by_prefix_or_all() {
        let off = parse_off(" attention, ,layer_norm_backward ");
        assert_eq!(off, ["attention", "layer_norm_backward"]);
        assert!(matches_off(&off, "remem::attention"));
        assert!(matches_off(&off, "remem::attention_backward_key"));
        assert!(matches_off(&off, "remem::layer_norm_backward"));
        assert!(!matches_off(&off, "remem::layer_norm"));
        assert!(!matches_off(&off, "remem::affine"));
        assert!(matches_off(&parse_off("all"), "remem::affine"));
        assert!(!matches_off(&parse_off(""), "remem::affine"));
    }
}
