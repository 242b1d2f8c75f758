//! How big a model's memory state grows as it reads a long text: stream a file through a
//! trained checkpoint and print, after 4, 16, 64, ... segments, the bits per token since the
//! last line (per byte with the byte tokenizer) and the size (Frobenius norm) of every tensor
//! of the state.
//!
//! ```sh
//! cargo run --release --example state_sizes -- runs/RUN/checkpoint.safetensors BOOK.txt [MAX_BYTES]
//! ```
//!
//! For ARMT the tensors are the layers' associative stores (`A` and `z` together), which keep
//! filling with the length read (docs/text.md compares the two store rules). For RMT it is
//! the memory tokens; for Transformer-XL and the infinity-former, the caches and long-term
//! memories.

use remem::infer::Session;
use remem::{DeviceChoice, device};

fn main() -> anyhow::Result<()> {
    remem::threads::run_on_pool(run)
}

fn run() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: state_sizes CHECKPOINT TEXT_FILE [MAX_BYTES]";
    let checkpoint = args.next().ok_or_else(|| anyhow::anyhow!(usage))?;
    let file = args.next().ok_or_else(|| anyhow::anyhow!(usage))?;
    let max: usize = match args.next() {
        Some(n) => n
            .parse()
            .map_err(|_| anyhow::anyhow!("MAX_BYTES `{n}`: not a number"))?,
        None => 1 << 20,
    };
    let device = device::select(DeviceChoice::Cpu)?.device;
    let mut session = Session::from_checkpoint(checkpoint.as_ref(), &device)?;
    let text = std::fs::read(&file)?;
    let mut encoder = session.tokenizer().encoder(session.vocab_size());
    let mut tokens = encoder.push(&text[..text.len().min(max)])?;
    tokens.extend(encoder.finish()?);
    let len = session.step_len();
    if tokens.len() < 2 * len {
        anyhow::bail!("{file}: fewer than two segments of {len} tokens");
    }
    println!("segments | bits per token since the last line | size of each state tensor");
    let (mut nats, mut scored, mut next_line) = (0.0f64, 0usize, 4u64);
    let segments = tokens.len() / len;
    for (i, chunk) in tokens.chunks_exact(len).enumerate() {
        let following = &tokens[i * len + 1..((i + 1) * len + 1).min(tokens.len())];
        session.feed_with(chunk, |segment| {
            let log_p = burn::tensor::activation::log_softmax(segment.logits, 1);
            let log_p: Vec<f32> = log_p
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap();
            let vocab = log_p.len() / len;
            for (row, &next) in following.iter().enumerate() {
                nats -= log_p[row * vocab + next as usize] as f64;
            }
            scored += following.len();
        })?;
        let read = i as u64 + 1;
        if read == next_line || i + 1 == segments {
            let sizes: Vec<String> = session
                .memory()
                .tensors()
                .into_iter()
                .map(|t| format!("{:.1}", t.powi_scalar(2).sum().sqrt().into_scalar::<f32>()))
                .collect();
            let bits = nats / scored.max(1) as f64 / std::f64::consts::LN_2;
            println!("{read:8} | {bits:.3} | {}", sizes.join(" "));
            (nats, scored, next_line) = (0.0, 0, next_line * 4);
        }
    }
    Ok(())
}
