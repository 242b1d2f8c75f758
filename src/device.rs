//! Choosing the compute device at run time.
//!
//! `auto` takes the first hardware GPU adapter wgpu finds and otherwise the CPU (`flex`). A
//! software adapter (Mesa's llvmpipe/lavapipe, SwiftShader) does not count as a GPU for `auto`:
//! flex is many times faster on the same CPU. Naming `wgpu` or `vulkan` still selects it.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, OnceLock};

use burn::tensor::Device;
use burn::tensor::wgpu::{WgpuBackend, WgpuSetup, wgpu};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which device to run on, as the user names it (`--device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// A hardware GPU through wgpu if there is one, otherwise the CPU.
    #[default]
    Auto,
    /// Any wgpu adapter, on whichever graphics API wgpu prefers (software adapters included).
    Wgpu,
    /// A wgpu adapter on Vulkan.
    Vulkan,
    /// A wgpu adapter on Metal.
    Metal,
    /// A wgpu adapter on DirectX 12.
    Dx12,
    /// The CPU, through Burn's `flex` backend.
    Cpu,
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            DeviceChoice::Auto => "auto",
            DeviceChoice::Wgpu => "wgpu",
            DeviceChoice::Vulkan => "vulkan",
            DeviceChoice::Metal => "metal",
            DeviceChoice::Dx12 => "dx12",
            DeviceChoice::Cpu => "cpu",
        };
        f.write_str(name)
    }
}

impl std::str::FromStr for DeviceChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(DeviceChoice::Auto),
            "wgpu" | "gpu" => Ok(DeviceChoice::Wgpu),
            "vulkan" => Ok(DeviceChoice::Vulkan),
            "metal" => Ok(DeviceChoice::Metal),
            "dx12" => Ok(DeviceChoice::Dx12),
            "cpu" | "flex" => Ok(DeviceChoice::Cpu),
            other => Err(Error::Device(format!(
                "unknown device `{other}` (expected auto, wgpu, vulkan, metal, dx12 or cpu)"
            ))),
        }
    }
}

/// A device ready for tensors, with a line that says what it is.
#[derive(Debug, Clone)]
pub struct SelectedDevice {
    /// The Burn device (without autodiff).
    pub device: Device,
    /// "NVIDIA H100 (Vulkan)" or "CPU (flex, 2 threads)".
    pub description: String,
    /// True for a hardware GPU adapter, false for the CPU and for software adapters.
    pub hardware_gpu: bool,
    /// True when the device runs on wgpu (hardware or software adapter).
    pub wgpu: bool,
}

/// What wgpu reported about the adapter it opened.
#[derive(Debug, Clone)]
struct Adapter {
    device: Device,
    name: String,
    api: String,
    software: bool,
}

/// Whether `device` (or the device an autodiff device wraps) is the CPU's flex.
pub fn is_cpu(device: &Device) -> bool {
    matches!(
        device.clone().inner().as_dispatch(),
        burn::backend::DispatchDevice::Flex(_)
    )
}

/// Ask Burn's GPU runtime (cubecl) to choose its kernels quickly: the lowest autotune level and
/// one timing per candidate kernel instead of ten. Each new matrix-product or reduction shape
/// is tuned by compiling and timing candidate kernels, which dominates a short program's first
/// seconds where compiling is slow (a browser's WebGPU); the kernels chosen may be a little
/// slower. A process-wide setting, so the library never makes it: a program calls this before
/// opening any GPU device. `false` when the runtime's configuration was already read or set
/// (then nothing changes).
pub fn prefer_quick_start() -> bool {
    use burn::cubecl::config::autotune::AutotuneLevel;
    use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
    let mut config = CubeClRuntimeConfig::default();
    config.autotune.level = AutotuneLevel::Minimal;
    config.autotune.bench.min_samples = 1;
    config.autotune.bench.max_samples = 1;
    CubeClRuntimeConfig::try_set(config)
}

/// The CPU device, described.
pub fn cpu() -> SelectedDevice {
    // The threads the CPU kernels split work over: the pool this runs on (the command line's,
    // see `threads::run_on_pool`) or rayon's global one, both sized by `RAYON_NUM_THREADS` when
    // it is set. On wasm the page's work runs on one thread.
    #[cfg(not(target_family = "wasm"))]
    let threads = rayon::current_num_threads();
    #[cfg(target_family = "wasm")]
    let threads = 1;
    SelectedDevice {
        device: Device::flex(),
        description: format!(
            "CPU (flex, {threads} thread{})",
            if threads == 1 { "" } else { "s" }
        ),
        hardware_gpu: false,
        wgpu: false,
    }
}

/// Open the device `choice` names.
///
/// Opening a wgpu adapter registers Burn's runtime for it, which can happen once per process:
/// the result is cached, so selecting the same device twice returns the same device.
///
/// # Errors
/// [`Error::Device`] when the requested GPU or graphics API is not available.
pub fn select(choice: DeviceChoice) -> Result<SelectedDevice> {
    match choice {
        DeviceChoice::Cpu => Ok(cpu()),
        DeviceChoice::Auto => {
            // Probe only the platform's native compute APIs (not OpenGL, whose probe is slow and
            // noisy), and take the first hardware adapter.
            let mut reasons = Vec::new();
            for api in native_apis() {
                match open_wgpu(api) {
                    Ok(adapter) if !adapter.software => return Ok(described(adapter)),
                    Ok(adapter) => reasons.push(format!(
                        "the only {api:?} adapter is the software renderer `{}`",
                        adapter.name
                    )),
                    Err(e) => {
                        reasons.push(e.to_string().trim_start_matches("device: ").to_string())
                    }
                }
            }
            let mut cpu = cpu();
            cpu.description = format!("{} (auto: {})", cpu.description, reasons.join("; "));
            Ok(cpu)
        }
        DeviceChoice::Wgpu => open_wgpu(WgpuBackend::Auto).map(described),
        DeviceChoice::Vulkan => open_wgpu(WgpuBackend::Vulkan).map(described),
        DeviceChoice::Metal => open_wgpu(WgpuBackend::Metal).map(described),
        DeviceChoice::Dx12 => open_wgpu(WgpuBackend::Dx12).map(described),
    }
}

/// The graphics APIs `auto` looks for a GPU on.
fn native_apis() -> Vec<WgpuBackend> {
    if cfg!(target_vendor = "apple") {
        vec![WgpuBackend::Metal]
    } else if cfg!(windows) {
        vec![WgpuBackend::Dx12, WgpuBackend::Vulkan]
    } else {
        vec![WgpuBackend::Vulkan]
    }
}

fn described(adapter: Adapter) -> SelectedDevice {
    SelectedDevice {
        device: adapter.device,
        description: format!(
            "{} ({}{})",
            adapter.name,
            adapter.api,
            if adapter.software { ", software" } else { "" }
        ),
        hardware_gpu: !adapter.software,
        wgpu: true,
    }
}

/// Open the default wgpu adapter on `api`, blocking until it is ready.
#[cfg(not(target_arch = "wasm32"))]
fn init_wgpu(api: WgpuBackend) -> Result<(Device, WgpuSetup), String> {
    use burn::tensor::DeviceKind;
    Device::wgpu_options()
        .device_kind(DeviceKind::DefaultDevice)
        .graphics_api(api)
        .init_with_setup()
        .map_err(|e| e.to_string())
}

/// In a browser WebGPU can only be opened asynchronously (see `web/src/lib.rs`).
#[cfg(target_arch = "wasm32")]
fn init_wgpu(_api: WgpuBackend) -> Result<(Device, WgpuSetup), String> {
    Err("in a browser, open WebGPU with `Device::wgpu_options().init_async().await`".into())
}

/// Open (once per process) the default wgpu adapter on `api`.
fn open_wgpu(api: WgpuBackend) -> Result<Adapter> {
    static OPENED: OnceLock<Mutex<HashMap<String, Result<Adapter, String>>>> = OnceLock::new();
    let key = format!("{api:?}");
    let mut opened = OPENED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let entry = opened.entry(key.clone()).or_insert_with(|| {
        // A driver that panics while being probed must not take the program down.
        let attempt = std::panic::catch_unwind(|| init_wgpu(api));
        match attempt {
            Ok(Ok((device, setup))) => {
                let info = setup.adapter.get_info();
                Ok(Adapter {
                    device,
                    name: info.name.clone(),
                    api: format!("{:?}", info.backend),
                    software: info.device_type == wgpu::DeviceType::Cpu,
                })
            }
            Ok(Err(e)) => Err(format!("no wgpu adapter on {key}: {e}")),
            Err(_) => Err(format!("the wgpu driver for {key} failed while opening")),
        }
    });
    entry.clone().map_err(Error::Device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_unknown_names_are_rejected() {
        assert_eq!("cpu".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!(
            "Vulkan".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Vulkan
        );
        let err = "tpu".parse::<DeviceChoice>().unwrap_err().to_string();
        assert!(err.contains("unknown device `tpu`"), "{err}");
    }

    #[test]
    fn cpu_is_described_with_its_threads() {
        let cpu = select(DeviceChoice::Cpu).unwrap();
        assert!(
            cpu.description.starts_with("CPU (flex, "),
            "{}",
            cpu.description
        );
        assert!(!cpu.hardware_gpu && !cpu.wgpu);
        // The count is the pool's the work runs on (`RAYON_NUM_THREADS` sizes it), not the
        // machine's cores.
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let cpu = one.install(|| select(DeviceChoice::Cpu).unwrap());
        assert_eq!(cpu.description, "CPU (flex, 1 thread)");
    }
}
