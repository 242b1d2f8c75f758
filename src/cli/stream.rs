//! `remem stream`: read a file (or stdin) of any size through a trained model, a chunk at a
//! time, and print what it predicts next.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use remem::SegmentModel;
use remem::device::{self, DeviceChoice};
use remem::infer::{Sampling, Session};
use remem::model::Layout;
use remem::task::TaskKind;
use remem::tokenizer::Tokenizer;
use remem::train;

use super::{checkpoint_path, parse_device};

/// Bytes read per chunk.
const CHUNK: usize = 1 << 20;

#[derive(Args, Debug)]
pub struct StreamArgs {
    /// The checkpoint file (runs/<name>/checkpoint.safetensors) or its run folder.
    #[arg(long, required_unless_present = "backbone")]
    checkpoint: Option<PathBuf>,
    /// A pretrained decoder to read with, without memory (a Llama-family GGUF file or Hugging
    /// Face folder), instead of a checkpoint.
    #[arg(long, conflicts_with = "checkpoint")]
    backbone: Option<PathBuf>,
    /// Tokens the backbone reads per segment (with --backbone).
    #[arg(long, requires = "backbone", default_value_t = 512)]
    segment_len: usize,
    /// The input file; stdin when neither --input nor --text is given.
    #[arg(long, conflicts_with = "text")]
    input: Option<PathBuf>,
    /// The input as an argument (for short inputs: `--text 0123|`).
    #[arg(long)]
    text: Option<String>,
    /// Continue from a session state saved with --save-state.
    #[arg(long)]
    load_state: Option<PathBuf>,
    /// Save the session state (memory and unfinished segment) here at the end.
    #[arg(long)]
    save_state: Option<PathBuf>,
    /// Tokens to generate after the input (default: 1, the next token; 0 for none). For an
    /// encoder-layout model: the answer's hidden slots after the input (default: 8, as the
    /// place tasks train it), printed up to the first `.`.
    #[arg(long)]
    generate: Option<usize>,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Sample among the k most likely tokens.
    #[arg(long)]
    top_k: Option<usize>,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// auto, wgpu, vulkan, metal, dx12 or cpu.
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    device: DeviceChoice,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Run `remem stream`.
pub fn run(args: StreamArgs) -> Result<()> {
    if !(args.temperature >= 0.0 && args.temperature.is_finite()) {
        bail!("--temperature must be a finite number >= 0");
    }
    if args.top_k == Some(0) {
        bail!("--top-k must be at least 1");
    }
    let path = match (&args.checkpoint, &args.backbone) {
        (Some(checkpoint), _) => checkpoint_path(checkpoint),
        (None, Some(backbone)) => backbone.clone(),
        (None, None) => unreachable!("clap requires one"),
    };
    if let Some(out) = &args.save_state {
        check_state_path(out, &path)?;
    }
    let device = device::select(args.device)?;
    eprintln!("device: {}", device.description);
    let mut session = match &args.backbone {
        Some(backbone) => Session::from_backbone(backbone, args.segment_len, &device.device)?,
        None => Session::from_checkpoint(&path, &device.device)?,
    };
    if let Some(state) = &args.load_state {
        session.load_file(state)?;
        eprintln!(
            "continuing from {} ({} tokens read before)",
            state.display(),
            session.consumed() + session.pending().len() as u64
        );
    }

    let (mut reader, total): (Box<dyn Read>, Option<u64>) = match (&args.input, &args.text) {
        (Some(file), _) => {
            let f = std::fs::File::open(file).with_context(|| format!("{}", file.display()))?;
            let len = f.metadata().map(|m| m.len()).ok();
            (Box::new(f), len)
        }
        (None, Some(text)) => (
            Box::new(std::io::Cursor::new(text.clone().into_bytes())),
            Some(text.len() as u64),
        ),
        (None, None) => (Box::new(std::io::stdin().lock()), None),
    };
    let bar = progress_bar(args.quiet, total);
    let tokenizer = session.tokenizer().clone();
    let mut encoder = tokenizer.encoder(session.vocab_size());
    let began = Instant::now();
    let mut read = 0u64;
    let mut tokens = 0u64;
    let mut buf = vec![0u8; CHUNK];
    // An encoder answers in hidden slots after the input: by default as many as training
    // showed it (the place tasks' widest answer, whose last slot the encoder's input length
    // cuts). As in training, the slots end a full segment, so its input is read whole first
    // and cut into segments from its end (the first one short).
    let decoder = session.model().config().layout == Layout::Decoder;
    let slots = match decoder {
        true => 0,
        false => args
            .generate
            .unwrap_or(remem::task::retention::answer_width(TaskKind::Qa1) - 1),
    };
    let mut held: Option<Vec<u32>> = (slots > 0).then(Vec::new);
    loop {
        let n = reader.read(&mut buf).with_context(|| {
            format!(
                "cannot read the input {}",
                args.input
                    .as_ref()
                    .map_or("(stdin)".into(), |p| p.display().to_string())
            )
        })?;
        let ids = if n == 0 {
            encoder.finish()
        } else {
            encoder.push(&buf[..n])
        }?;
        match &mut held {
            Some(all) => all.extend(ids.iter()),
            None => session.feed(&ids)?,
        }
        read += n as u64;
        tokens += ids.len() as u64;
        bar.set_position(read);
        bar.set_message(format!(
            "{tokens} tokens, {:.0} tokens/s",
            tokens as f64 / began.elapsed().as_secs_f64().max(1e-9)
        ));
        if n == 0 {
            break;
        }
    }
    bar.finish_and_clear();
    if let Some(all) = held {
        let step = session.step_len();
        if slots > step {
            bail!("--generate {slots}: an answer takes at most one segment ({step} slots)");
        }
        let lead = (all.len() + slots) % step;
        if lead > 0 && lead <= all.len() {
            session.read_segment(&all[..lead])?;
        }
        session.feed(&all[lead.min(all.len())..])?;
    }
    let seconds = began.elapsed().as_secs_f64();
    if tokens == 0 && args.load_state.is_none() {
        bail!(
            "the input is empty: nothing to stream (give --input FILE, --text, or pipe text to stdin)"
        );
    }
    eprintln!(
        "read {tokens} tokens in {seconds:.2} s ({:.0} tokens/s): {} segments of {}, {} pending; peak memory {}",
        tokens as f64 / seconds.max(1e-9),
        session.consumed() / session.step_len() as u64,
        session.step_len(),
        session.pending().len(),
        train::peak_rss_bytes().map_or("unknown".into(), |b| format!("{} MiB", b >> 20)),
    );

    // The state saved is the one after the input, before any generated token.
    if let Some(out) = &args.save_state {
        session.save_file(out)?;
        eprintln!("saved the session to {}", out.display());
    }
    if !decoder {
        if slots > 0 {
            // Printed up to the first `.` (or just the first token), a word repeated in
            // neighbouring slots once.
            let mut ids = session.answer(slots)?;
            let end = ids
                .iter()
                .position(|&id| tokenizer.decode(&[id]).trim() == ".")
                .map_or(1, |i| i + 1);
            ids.truncate(end);
            ids.dedup();
            println!("{}", tokenizer.decode(&ids).trim());
        }
        return Ok(());
    }
    let generate = args.generate.unwrap_or(1);
    if generate > 0 {
        let sampling = Sampling {
            temperature: args.temperature,
            top_k: args.top_k,
            seed: args.seed,
        };
        // Each token is printed as it is made: a long generation shows its progress, and a
        // reader that has seen enough can close the pipe.
        let mut out = std::io::stdout().lock();
        let mut failed = None;
        let mut first = true;
        // A pretrained tokenizer's text is decoded from all ids so far (a character or a
        // word-piece joins across tokens), and what is new is printed once it is whole.
        let (mut generated, mut printed) = (Vec::new(), 0);
        session.generate_with(generate, &sampling, |id| {
            let piece = match &tokenizer {
                // Bytes go out as bytes (a character may span several tokens).
                Tokenizer::Bytes => vec![u8::try_from(id).unwrap_or(b'?')],
                Tokenizer::Ids if !first => format!(" {id}").into_bytes(),
                Tokenizer::Pretrained { .. } => {
                    generated.push(id);
                    let text = tokenizer.decode(&generated);
                    match text.ends_with('\u{fffd}') || text.len() < printed {
                        true => Vec::new(),
                        false => {
                            let new = text.as_bytes()[printed..].to_vec();
                            printed = text.len();
                            new
                        }
                    }
                }
                _ => tokenizer.decode(&[id]).into_bytes(),
            };
            first = false;
            match out.write_all(&piece).and_then(|()| out.flush()) {
                Ok(()) => std::ops::ControlFlow::Continue(()),
                Err(e) => {
                    failed = Some(e);
                    std::ops::ControlFlow::Break(())
                }
            }
        })?;
        if let Some(e) = failed {
            return Err(e).context("writing the generated text");
        }
        writeln!(out).context("writing the generated text")?;
    }
    Ok(())
}

/// Refuse a `--save-state` path the state could not be written to, before the input is read
/// (so a long stream is not lost at the end), or one that would replace the checkpoint.
fn check_state_path(out: &Path, checkpoint: &Path) -> Result<()> {
    if out.is_dir() {
        bail!("--save-state {} is a folder: name a file", out.display());
    }
    let same = std::fs::canonicalize(out)
        .ok()
        .zip(std::fs::canonicalize(checkpoint).ok())
        .is_some_and(|(a, b)| a == b);
    if same {
        bail!(
            "--save-state {} is the checkpoint being read: name another file",
            out.display()
        );
    }
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent
        && !parent.is_dir()
    {
        bail!(
            "--save-state {}: the folder {} does not exist",
            out.display(),
            parent.display()
        );
    }
    Ok(())
}

fn progress_bar(quiet: bool, total: Option<u64>) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    match total {
        Some(len) => ProgressBar::new(len).with_style(
            ProgressStyle::with_template(
                "{bar:30} {bytes}/{total_bytes} {msg} [{elapsed_precise}<{eta_precise}]",
            )
            .expect("valid template"),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {bytes} {msg} [{elapsed_precise}]")
                .expect("valid template"),
        ),
    }
}
