//! The comparison as a Markdown table and as CSV.

use std::fmt::Write;

use super::{RunResult, Stats, cell, distinct, model_name};

fn ok_values(runs: &[&RunResult], f: impl Fn(&crate::train::Summary) -> f64) -> Vec<f64> {
    runs.iter()
        .filter_map(|r| r.outcome.as_ref().ok().map(&f))
        .collect()
}

fn stats_text(s: Option<Stats>) -> String {
    s.map_or("-".into(), |s| {
        format!("{:.3} ({:.3}-{:.3})", s.mean, s.min, s.max)
    })
}

/// Whether the runs modelled text: their second figure is bits per byte, not exact match.
fn is_text(results: &[RunResult]) -> bool {
    results.iter().any(|r| {
        r.outcome
            .as_ref()
            .is_ok_and(|s| s.eval.bits_per_byte.is_some())
    })
}

/// The second figure of a run: held-out bits per byte for text, greedy exact match otherwise.
fn second(s: &crate::train::Summary) -> f64 {
    s.eval.bits_per_byte.unwrap_or(s.eval.exact_match)
}

/// One row per (model, segments): mean (min-max) over seeds of token accuracy and exact match
/// (for text: next-byte accuracy and bits per byte), every seed's value, failed runs,
/// throughput and peak memory.
pub fn markdown(results: &[RunResult]) -> String {
    let (name, short) = if is_text(results) {
        ("bits per byte", "bpb")
    } else {
        ("exact match", "exact")
    };
    let mut out = format!(
        "| model | segments | token accuracy mean (min-max) | {name} mean (min-max) | per seed: token acc / {short} | failed | train tokens/s | peak RSS MB |\n|---|---|---|---|---|---|---|---|\n",
    );
    for model in distinct(results, |s| s.model) {
        for segments in distinct(results, |s| s.segments) {
            let runs = cell(results, model, segments);
            if runs.is_empty() {
                continue;
            }
            let seeds: Vec<String> = runs
                .iter()
                .map(|r| match &r.outcome {
                    Ok(s) if s.trained_segments > 0 && s.trained_segments < segments => format!(
                        "{}: {:.3} / {:.3} (trained to {} segments)",
                        r.spec.seed,
                        s.eval.token_accuracy,
                        second(s),
                        s.trained_segments
                    ),
                    Ok(s) => format!(
                        "{}: {:.3} / {:.3}",
                        r.spec.seed,
                        s.eval.token_accuracy,
                        second(s)
                    ),
                    Err(_) => format!("{}: failed", r.spec.seed),
                })
                .collect();
            let failed = runs.iter().filter(|r| r.outcome.is_err()).count();
            let tps = Stats::of(&ok_values(&runs, |s| s.tokens_per_s));
            let rss = ok_values(&runs, |s| s.peak_rss_bytes.unwrap_or(0) as f64 / 1e6);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                model_name(model),
                segments,
                stats_text(Stats::of(&ok_values(&runs, |s| s.eval.token_accuracy))),
                stats_text(Stats::of(&ok_values(&runs, second))),
                seeds.join("; "),
                failed,
                tps.map_or("-".into(), |t| format!("{:.0}", t.mean)),
                Stats::of(&rss).map_or("-".into(), |m| format!("{:.0}", m.max)),
            );
        }
    }
    out
}

/// One line per run.
pub fn csv(results: &[RunResult]) -> String {
    let mut out = String::from(
        "model,segments,seed,status,token_accuracy,greedy_token_accuracy,exact_match,eval_loss,train_tokens_per_s,peak_rss_bytes,train_seconds,bits_per_byte,error\n",
    );
    for r in results {
        let spec = &r.spec;
        match &r.outcome {
            Ok(s) => {
                let _ = writeln!(
                    out,
                    "{},{},{},ok,{},{},{},{},{},{},{},{},",
                    model_name(spec.model),
                    spec.segments,
                    spec.seed,
                    s.eval.token_accuracy,
                    s.eval.greedy_token_accuracy,
                    s.eval.exact_match,
                    s.eval.loss,
                    s.tokens_per_s,
                    s.peak_rss_bytes.map_or(String::new(), |b| b.to_string()),
                    s.elapsed_s,
                    s.eval
                        .bits_per_byte
                        .map_or(String::new(), |b| b.to_string())
                );
            }
            Err(e) => {
                let _ = writeln!(
                    out,
                    "{},{},{},failed,,,,,,,,,\"{}\"",
                    model_name(spec.model),
                    spec.segments,
                    spec.seed,
                    e.replace('"', "'").replace('\n', " ")
                );
            }
        }
    }
    out
}
