//! Embed remem in a program: stream a long input through a trained model, save the memory,
//! and continue from it in a second run of the program.
//!
//! ```sh
//! cargo run --release -- train                    # writes runs/copy-rmt-1/checkpoint.safetensors
//! cargo run --release --example stream_embed -- runs/copy-rmt-1/checkpoint.safetensors first
//! cargo run --release --example stream_embed -- runs/copy-rmt-1/checkpoint.safetensors second
//! ```
//!
//! The first run reads 100,000 random symbols (the memory stays the same size however long the
//! input), then the start of a copy question (the default model copies 8 symbols), and saves the session to `stream_embed.state`. The
//! second run, in a new process, loads it, reads the rest of the question and answers it.

use std::path::Path;

use rand::{Rng, SeedableRng};
use remem::infer::{Sampling, Session};
use remem::{DeviceChoice, device};

const STATE: &str = "stream_embed.state";

fn main() -> anyhow::Result<()> {
    // Run on remem's CPU thread pool: the library never builds threads a program did not ask
    // for, and parallel work started from outside the pool costs two wake-ups per operation.
    remem::threads::run_on_pool(run)
}

fn run() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let checkpoint = args
        .next()
        .unwrap_or_else(|| "runs/copy-rmt-1/checkpoint.safetensors".into());
    let phase = args.next().unwrap_or_else(|| "first".into());
    let device = device::select(DeviceChoice::Auto)?;
    println!("device: {}", device.description);
    let mut session = Session::from_checkpoint(Path::new(&checkpoint), &device.device)?;
    let tokenizer = session.tokenizer().clone();
    let vocab = session.vocab_size();

    match phase.as_str() {
        "first" => {
            // A long stretch of noise: symbols only, never a separator.
            let mut rng = rand::rngs::StdRng::seed_from_u64(1);
            let noise: Vec<u32> = (0..100_000)
                .map(|_| rng.random_range(2..vocab as u32))
                .collect();
            session.feed(&noise)?;
            println!(
                "read {} tokens; the memory is still {:?}",
                session.consumed(),
                session.memory().memory().map(|m| m.dims())
            );
            // The model answers questions that start on a segment boundary, as in training:
            // start the question with a fresh memory, read half of it, and save.
            session.reset();
            session.feed(&tokenizer.encode("3141", vocab)?)?;
            session.save_file(Path::new(STATE))?;
            println!("saved the session to {STATE}; run again with `second`");
        }
        "second" => {
            session.load_file(Path::new(STATE))?;
            session.feed(&tokenizer.encode("5926|", vocab)?)?;
            let answer = session.generate(16, &Sampling::greedy())?;
            println!("31415926| -> {}", tokenizer.decode(&answer));
        }
        other => anyhow::bail!("unknown phase `{other}`: use first or second"),
    }
    Ok(())
}
