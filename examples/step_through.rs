//! Read one copy-task sequence segment by segment with a trained RMT, and watch the memory.
//!
//! ```sh
//! cargo run --release -- train                     # writes runs/copy-rmt-1/checkpoint.safetensors
//! cargo run --release --example step_through -- runs/copy-rmt-1/checkpoint.safetensors
//! ```

use std::path::PathBuf;

use burn::prelude::*;
use rand::SeedableRng;
use remem::SegmentModel;
use remem::device::{self, DeviceChoice};
use remem::model::Layout;
use remem::task::SegmentBatcher;
use remem::train::{self, Checkpoint};

fn main() -> anyhow::Result<()> {
    let path = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "runs/copy-rmt-1/checkpoint.safetensors".into()),
    );
    let checkpoint = Checkpoint::load(&path)?;
    let mut config = checkpoint.config.clone();
    let task = config.resolve()?;
    let device = device::select(DeviceChoice::Cpu)?.device;
    let model = checkpoint.load_model(&path, &device)?;
    if config.model.layout != Layout::Decoder {
        anyhow::bail!("this example reads decoder models");
    }

    let sample = task.sample(&mut rand::rngs::StdRng::seed_from_u64(2026));
    let rows = SegmentBatcher::new(Layout::Decoder, task.input_len()).rows(&sample);
    let predictions = train::eval::greedy(
        &model,
        std::slice::from_ref(&rows),
        model.step_len(task.input_len()),
        &device,
    );

    // Step through the segments with the true input, printing how much each memory slot moved.
    let mut state = model.init_state(1, &device);
    for (s, segment) in rows
        .inputs
        .chunks(model.step_len(task.input_len()))
        .enumerate()
    {
        let before = state.memory().cloned();
        let tokens = Tensor::<2, Int>::from_data(
            TensorData::new(
                segment.iter().map(|&t| t as i64).collect(),
                [1, segment.len()],
            ),
            &device,
        );
        let (_, next) = model.step(tokens, state, false);
        if let (Some(a), Some(b)) = (before, next.memory()) {
            let b = b.clone();
            let norms =
                (a.clone().powi_scalar(2).sum_dim(2) * b.clone().powi_scalar(2).sum_dim(2)).sqrt();
            let cos = (a * b).sum_dim(2) / norms;
            let cos: Vec<f32> = cos
                .into_data()
                .convert::<f32>()
                .try_to_vec()
                .unwrap_or_default();
            let cos: Vec<String> = cos.iter().map(|c| format!("{c:+.2}")).collect();
            println!(
                "segment {s}: input {segment:?}\n  memory slot cosine to previous: {}",
                cos.join(" ")
            );
        }
        state = next;
    }
    let answer: Vec<u32> = (0..rows.answer.len())
        .filter(|&p| rows.answer[p])
        .map(|p| rows.targets[p])
        .collect();
    let greedy: Vec<u32> = (0..rows.answer.len())
        .filter(|&p| rows.answer[p])
        .map(|p| predictions[0][p])
        .collect();
    println!(
        "truth : {answer:?}\nmodel : {greedy:?}\n{}",
        if answer == greedy { "correct" } else { "wrong" }
    );
    Ok(())
}
