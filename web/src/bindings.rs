//! The wasm-bindgen layer the page's JavaScript calls: [`Demo`] wraps [`crate::demo::Demo`].

use crate::{demo, retention};

use std::cell::RefCell;
use std::rc::Rc;

use burn::prelude::*;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::js_sys::Promise;

unsafe extern "C" {
    /// The module's static constructors (the `inventory` registrations of the GPU runtime's
    /// compiler, among others), a function the wasm linker synthesises.
    fn __wasm_call_ctors();
}

/// Run the static constructors once, install the panic hook and a logger, so Rust panics and
/// the GPU runtime's warnings (a shader WebGPU refuses is only logged, not returned) reach the
/// browser console.
///
/// The constructors: a module that never calls `__wasm_call_ctors` itself is linked as a
/// "command", each of its exports wrapped to run every constructor first. The page calls into
/// the module thousands of times (every promise it polls, every JavaScript value it hands over),
/// and those re-runs were about half of the page's main-thread time on WebGPU (a profile of the
/// first answer: 7 of 14 s). Calling it here, once, makes the linker leave the exports alone.
#[wasm_bindgen(start)]
pub fn start() {
    // SAFETY: wasm-bindgen runs this start function once, right after instantiation and before
    // any other export is called; the constructors only register static items (idempotent).
    unsafe { __wasm_call_ctors() };
    console_error_panic_hook::set_once();
    if log::set_logger(&CONSOLE).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
}

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console, js_name = warn)]
    fn console_warn(message: &str);
}

/// Forwards `log` records at warning level and above to `console.warn`.
struct Console;

static CONSOLE: Console = Console;

impl log::Log for Console {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            console_warn(&format!(
                "{} {}: {}",
                record.level(),
                record.target(),
                record.args()
            ));
        }
    }

    fn flush(&self) {}
}

/// A model loaded on a device, driven by the page.
#[wasm_bindgen]
pub struct Demo {
    /// `None` while a step is running (a second call then fails with "busy", not a panic).
    inner: Rc<RefCell<Option<demo::Demo>>>,
    device: String,
}

fn js(e: impl std::fmt::Display) -> JsValue {
    JsError::new(&e.to_string()).into()
}

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("page data serialises")
}

/// Open WebGPU through wgpu, or the CPU (Burn's flex backend in WebAssembly).
async fn open(cpu: bool) -> Result<(Device, String), JsValue> {
    if cpu {
        return Ok((Device::flex(), "CPU (flex, WebAssembly)".into()));
    }
    // Compiling is slow in a browser: tune kernels with fewer candidates and timings.
    remem::device::prefer_quick_start();
    let (device, setup) = Device::wgpu_options()
        .init_with_setup_async()
        .await
        .map_err(|e| js(format!("WebGPU could not be opened: {e}")))?;
    // Browsers often keep the adapter's name to themselves; the page then adds what it knows.
    let name = setup.adapter.get_info().name;
    let label = if name.is_empty() {
        "WebGPU".to_string()
    } else {
        format!("WebGPU ({name})")
    };
    Ok((device, label))
}

impl Demo {
    fn with<T>(&self, f: impl FnOnce(&mut demo::Demo) -> T) -> Result<T, JsValue> {
        let mut slot = self.inner.borrow_mut();
        let demo = slot
            .as_mut()
            .ok_or_else(|| js("busy: a segment is being processed"))?;
        Ok(f(demo))
    }
}

#[wasm_bindgen]
impl Demo {
    /// Open the device (WebGPU, or the CPU when `cpu`) and load a checkpoint's bytes
    /// (`name` names it in errors).
    pub async fn load(bytes: Vec<u8>, name: String, cpu: bool) -> Result<Demo, JsValue> {
        let (device, label) = open(cpu).await?;
        let demo = demo::Demo::load(&bytes, &name, &device).map_err(js)?;
        Ok(Demo {
            inner: Rc::new(RefCell::new(Some(demo))),
            device: label,
        })
    }

    /// The device the model runs on, in words.
    pub fn device(&self) -> String {
        self.device.clone()
    }

    /// The model and task ([`demo::Info`]) as JSON.
    pub fn info(&self) -> Result<String, JsValue> {
        self.with(|d| json(d.info()))
    }

    /// A question of the trained length and its answer ([`demo::Example`]) as JSON.
    pub fn example(&self, seed: u32) -> Result<String, JsValue> {
        self.with(|d| json(&d.example(seed as u64)))
    }

    /// Start reading `question` from an empty memory.
    pub fn start(&self, question: &str) -> Result<(), JsValue> {
        self.with(|d| d.start(question))?.map_err(js)
    }

    /// Process one more segment: resolves to its [`demo::SegmentView`] as JSON, or to `null`
    /// once the answer is written.
    pub fn step(&self) -> Promise {
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let view = with_taken(&inner, |mut demo| async move {
                let result = demo.step().await;
                (demo, result)
            })
            .await?;
            match view {
                Some(view) => Ok(JsValue::from_str(&json(&view))),
                None => Ok(JsValue::NULL),
            }
        })
    }

    /// The answer so far against the truth ([`demo::Outcome`]) as JSON, or `null` before a run.
    pub fn outcome(&self) -> Result<Option<String>, JsValue> {
        self.with(|d| d.outcome().map(|o| json(&o)))
    }
}

/// The retention demo ([`crate::retention::Retention`]) driven by the page: a fact buried in
/// book text, read segment by segment.
#[wasm_bindgen]
pub struct RetentionDemo {
    /// `None` while a call is running (a second call then fails with "busy", not a panic).
    inner: Rc<RefCell<Option<retention::Retention>>>,
    device: String,
}

/// Run `f` on the demo taken out of `slot` (a second call meanwhile finds it empty: "busy"),
/// putting it back afterwards.
async fn with_taken<D, T, F>(
    slot: &Rc<RefCell<Option<D>>>,
    f: impl FnOnce(D) -> F,
) -> Result<T, JsValue>
where
    F: std::future::Future<Output = (D, remem::Result<T>)>,
{
    let demo = slot
        .borrow_mut()
        .take()
        .ok_or_else(|| js("busy: the model is working"))?;
    let (demo, result) = f(demo).await;
    *slot.borrow_mut() = Some(demo);
    result.map_err(js)
}

#[wasm_bindgen]
impl RetentionDemo {
    /// Open the device (WebGPU, or the CPU when `cpu`) and load a memorize checkpoint's bytes.
    pub async fn load(bytes: Vec<u8>, name: String, cpu: bool) -> Result<RetentionDemo, JsValue> {
        let (device, label) = open(cpu).await?;
        let demo = retention::Retention::load(&bytes, &name, &device).map_err(js)?;
        Ok(RetentionDemo {
            inner: Rc::new(RefCell::new(Some(demo))),
            device: label,
        })
    }

    /// The device the model runs on, in words.
    pub fn device(&self) -> String {
        self.device.clone()
    }

    /// The model and the words of a fact ([`retention::Info`]) as JSON.
    pub fn info(&self) -> Result<String, JsValue> {
        let slot = self.inner.borrow();
        let demo = slot
            .as_ref()
            .ok_or_else(|| js("busy: the model is reading"))?;
        Ok(json(demo.info()))
    }

    /// Bury `who verb to the place.` under `text`, filling `segments` segments; the plan
    /// ([`retention::Plan`]) as JSON.
    pub fn start(
        &self,
        who: &str,
        verb: &str,
        place: &str,
        text: &[u8],
        segments: u32,
    ) -> Result<String, JsValue> {
        let mut slot = self.inner.borrow_mut();
        let demo = slot
            .as_mut()
            .ok_or_else(|| js("busy: the model is reading"))?;
        let plan = demo
            .start(who, verb, place, text, segments as usize)
            .map_err(js)?;
        Ok(json(&plan))
    }

    /// Read up to `n` more segments: resolves to a [`retention::Progress`] as JSON.
    pub fn read(&self, n: u32) -> Promise {
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let progress = with_taken(&inner, |mut demo| async move {
                let result = demo.read(n as usize).await;
                (demo, result)
            })
            .await?;
            Ok(JsValue::from_str(&json(&progress)))
        })
    }

    /// Ask the question: resolves to a [`retention::Outcome`] as JSON.
    pub fn finish(&self) -> Promise {
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let outcome = with_taken(&inner, |mut demo| async move {
                let result = demo.finish().await;
                (demo, result)
            })
            .await?;
            Ok(JsValue::from_str(&json(&outcome)))
        })
    }
}
