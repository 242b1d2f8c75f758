//! The page's first answer natively on wgpu: load a model from `web/assets`, play its first
//! example to the answer, and print the time of each segment. What the browser spends there is
//! mostly the GPU runtime compiling and tuning kernels; natively the same work can be logged:
//!
//! ```sh
//! cargo build --release --workspace --example first_answer
//! CUBECL_AUTOTUNE_CACHE=0 CUBECL_DEBUG_LOG=/tmp/cubecl.log \
//!   target/release/examples/first_answer copy-rmt.safetensors
//! ```
//!
//! (`--workspace` builds Burn with the features the test build gives it: `-p remem-web` alone
//! would build Burn a second time.) The runtime reads its settings from the environment here;
//! to tune as the page does (`remem::device::prefer_quick_start`), add
//! `CUBECL_AUTOTUNE_LEVEL=minimal`, or a `cubecl.toml` with `[autotune.bench] max_samples = 1`
//! as well. (Calling that function here would replace the settings, and with them the log.)

use std::time::Instant;

use burn::prelude::*;
use remem_web::demo::Demo;

fn main() {
    let file = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "copy-rmt.safetensors".into());
    let started = Instant::now();
    let seconds = || started.elapsed().as_secs_f64();
    let (device, setup) = Device::wgpu_options()
        .init_with_setup()
        .expect("no wgpu adapter");
    let path = format!("{}/assets/{file}", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let mut demo = Demo::load(&bytes, &file, &device).expect("loading the model");
    println!("{file} on {}", setup.adapter.get_info().name);
    println!("loaded: {:.2} s", seconds());
    let example = demo.example(1);
    demo.start(&example.question).expect("starting the example");
    let mut segments = 0;
    while pollster::block_on(demo.step())
        .expect("a segment")
        .is_some()
    {
        segments += 1;
        println!("segment {segments}: {:.2} s", seconds());
    }
    let outcome = demo.outcome().expect("an outcome");
    println!(
        "first answer: {:.2} s ({})",
        seconds(),
        if outcome.solved { "correct" } else { "wrong" }
    );
}
