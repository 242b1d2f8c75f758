//! A PNG plot of accuracy against the number of segments, one line per model, drawn with
//! `image` alone (a 3x5 pixel font labels the axes and the legend).

use std::path::Path;

use image::{Rgb, RgbImage};

use super::{RunResult, Stats, cell, distinct, model_name};
use crate::error::{Error, Result};

const W: u32 = 760;
const H: u32 = 440;
const LEFT: i64 = 70;
const RIGHT: i64 = 190;
const TOP: i64 = 40;
const BOTTOM: i64 = 60;
const COLORS: [[u8; 3]; 6] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
];

/// 3x5 glyphs, rows top to bottom, `#` = ink.
fn glyph(c: char) -> Option<[&'static str; 5]> {
    Some(match c.to_ascii_uppercase() {
        '0' => ["###", "#.#", "#.#", "#.#", "###"],
        '1' => [".#.", "##.", ".#.", ".#.", "###"],
        '2' => ["###", "..#", "###", "#..", "###"],
        '3' => ["###", "..#", "###", "..#", "###"],
        '4' => ["#.#", "#.#", "###", "..#", "..#"],
        '5' => ["###", "#..", "###", "..#", "###"],
        '6' => ["###", "#..", "###", "#.#", "###"],
        '7' => ["###", "..#", "..#", "..#", "..#"],
        '8' => ["###", "#.#", "###", "#.#", "###"],
        '9' => ["###", "#.#", "###", "..#", "###"],
        '.' => ["...", "...", "...", "...", ".#."],
        '-' => ["...", "...", "###", "...", "..."],
        'A' => [".#.", "#.#", "###", "#.#", "#.#"],
        'B' => ["##.", "#.#", "##.", "#.#", "##."],
        'C' => ["###", "#..", "#..", "#..", "###"],
        'D' => ["##.", "#.#", "#.#", "#.#", "##."],
        'E' => ["###", "#..", "###", "#..", "###"],
        'F' => ["###", "#..", "###", "#..", "#.."],
        'G' => ["###", "#..", "#.#", "#.#", "###"],
        'H' => ["#.#", "#.#", "###", "#.#", "#.#"],
        'I' => ["###", ".#.", ".#.", ".#.", "###"],
        'J' => ["..#", "..#", "..#", "#.#", "###"],
        'K' => ["#.#", "#.#", "##.", "#.#", "#.#"],
        'L' => ["#..", "#..", "#..", "#..", "###"],
        'M' => ["#.#", "###", "###", "#.#", "#.#"],
        'N' => ["##.", "#.#", "#.#", "#.#", "#.#"],
        'O' => ["###", "#.#", "#.#", "#.#", "###"],
        'P' => ["###", "#.#", "###", "#..", "#.."],
        'Q' => ["###", "#.#", "#.#", "###", "..#"],
        'R' => ["##.", "#.#", "##.", "#.#", "#.#"],
        'S' => ["###", "#..", "###", "..#", "###"],
        'T' => ["###", ".#.", ".#.", ".#.", ".#."],
        'U' => ["#.#", "#.#", "#.#", "#.#", "###"],
        'V' => ["#.#", "#.#", "#.#", "#.#", ".#."],
        'W' => ["#.#", "#.#", "###", "###", "#.#"],
        'X' => ["#.#", "#.#", ".#.", "#.#", "#.#"],
        'Y' => ["#.#", "#.#", ".#.", ".#.", ".#."],
        'Z' => ["###", "..#", ".#.", "#..", "###"],
        _ => return None,
    })
}

struct Canvas(RgbImage);

impl Canvas {
    fn dot(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as u32) < W && (y as u32) < H {
            self.0.put_pixel(x as u32, y as u32, Rgb(c));
        }
    }

    fn rect(&mut self, x: i64, y: i64, w: i64, h: i64, c: [u8; 3]) {
        for dy in 0..h {
            for dx in 0..w {
                self.dot(x + dx, y + dy, c);
            }
        }
    }

    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: [u8; 3]) {
        let steps = (x1 - x0).abs().max((y1 - y0).abs()).max(1);
        for i in 0..=steps {
            let x = x0 + (x1 - x0) * i / steps;
            let y = y0 + (y1 - y0) * i / steps;
            self.rect(x, y, 2, 2, c);
        }
    }

    /// Text at scale 2 (6x10 pixels a character, 8 apart); unknown characters are blank.
    fn text(&mut self, x: i64, y: i64, s: &str, c: [u8; 3]) {
        for (i, ch) in s.chars().enumerate() {
            if let Some(rows) = glyph(ch) {
                for (r, row) in rows.iter().enumerate() {
                    for (col, px) in row.chars().enumerate() {
                        if px == '#' {
                            self.rect(x + i as i64 * 8 + col as i64 * 2, y + r as i64 * 2, 2, 2, c);
                        }
                    }
                }
            }
        }
    }
}

fn label(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A y axis `(bottom, top)` of four equal steps that holds every finite value: the steps as
/// small as 0.05 and the bottom a multiple of the step, so that differences of a few hundredths
/// (bits per byte between models) show. `(0, 1)` when no value is finite.
pub fn fitted_range(values: impl IntoIterator<Item = f64>) -> (f64, f64) {
    let finite: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
    let Some(min) = finite.iter().copied().reduce(f64::min) else {
        return (0.0, 1.0);
    };
    let max = finite.iter().copied().fold(min, f64::max);
    let mut step = 0.05;
    loop {
        for m in [1.0, 2.0, 5.0] {
            let s = step * m;
            let bottom = (min / s).floor() * s;
            if bottom + 4.0 * s >= max {
                return (bottom, bottom + 4.0 * s);
            }
        }
        step *= 10.0;
    }
}

/// Draw `metric` (mean line, min-max bar and each seed's point) against the segment counts,
/// on a y axis from `range.0` to `range.1` (0 to 1 for accuracies; for bits per byte
/// [`fitted_range`] of the values).
pub fn accuracy_png(
    results: &[RunResult],
    metric: (&str, fn(&crate::train::Summary) -> f64),
    range: (f64, f64),
    path: &Path,
) -> Result<()> {
    let (bottom, top) = range;
    let span = (top - bottom).max(f64::MIN_POSITIVE);
    let mut c = Canvas(RgbImage::from_pixel(W, H, Rgb([255, 255, 255])));
    let (x0, x1, y0, y1) = (LEFT, W as i64 - RIGHT, H as i64 - BOTTOM, TOP);
    let black = [0, 0, 0];
    let grey = [220, 220, 220];
    for k in 0..=4 {
        let v = k as f64 / 4.0;
        let y = y0 + ((y1 - y0) as f64 * v) as i64;
        let v = bottom + v * span;
        c.line((x0, y), (x1, y), grey);
        c.text(x0 - 8 - 8 * label(v).len() as i64, y - 5, &label(v), black);
    }
    c.line((x0, y0), (x1, y0), black);
    c.line((x0, y0), (x0, y1), black);
    c.text(x0, 12, metric.0, black);
    c.text((x0 + x1) / 2 - 32, y0 + 36, "SEGMENTS", black);

    let segments = distinct(results, |s| s.segments);
    let xs: Vec<i64> = (0..segments.len())
        .map(|i| x0 + (x1 - x0) * (2 * i as i64 + 1) / (2 * segments.len().max(1) as i64))
        .collect();
    for (x, s) in xs.iter().zip(&segments) {
        c.line((*x, y0), (*x, y0 + 6), black);
        c.text(
            x - 4 * s.to_string().len() as i64,
            y0 + 12,
            &s.to_string(),
            black,
        );
    }
    let to_y = |v: f64| y0 + ((y1 - y0) as f64 * ((v - bottom) / span).clamp(0.0, 1.0)) as i64;

    for (m, model) in distinct(results, |s| s.model).into_iter().enumerate() {
        let color = COLORS[m % COLORS.len()];
        let offset = m as i64 * 4 - 6; // keep overlapping models apart
        let mut previous = None;
        for (x, &s) in xs.iter().zip(&segments) {
            let values: Vec<f64> = cell(results, model, s)
                .iter()
                .filter_map(|r| r.outcome.as_ref().ok().map(metric.1))
                .collect();
            let Some(stats) = Stats::of(&values) else {
                previous = None;
                continue;
            };
            let x = x + offset;
            c.line((x, to_y(stats.min)), (x, to_y(stats.max)), color);
            for v in &values {
                c.rect(x - 3, to_y(*v) - 3, 6, 6, color);
            }
            let point = (x, to_y(stats.mean));
            if let Some(p) = previous {
                c.line(p, point, color);
            }
            previous = Some(point);
        }
        let ly = TOP + 10 + m as i64 * 22;
        c.rect(x1 + 20, ly, 14, 10, color);
        c.text(x1 + 42, ly, &model_name(model), black);
    }
    c.0.save(path)
        .map_err(|e| Error::io(path, std::io::Error::other(e)))
}

#[cfg(test)]
mod tests {
    use super::fitted_range;

    /// Bits per byte between 2.33 and 3.17 get an axis that holds them with steps of 0.25, not
    /// 0 to 8; a tight spread gets steps of 0.05; accuracies from 0 to 1 keep 0 to 1.
    #[test]
    fn the_fitted_axis_holds_the_values_in_small_steps() {
        let (lo, hi) = fitted_range([2.333, 2.42, 3.167, f64::NAN]);
        assert!(
            (lo - 2.25).abs() < 1e-9 && (hi - 3.25).abs() < 1e-9,
            "{lo}..{hi}"
        );
        let (lo, hi) = fitted_range([2.36, 2.41]);
        assert!(
            (lo - 2.35).abs() < 1e-9 && (hi - 2.55).abs() < 1e-9,
            "{lo}..{hi}"
        );
        let (lo, hi) = fitted_range([0.0, 1.0]);
        assert!(lo == 0.0 && (hi - 1.0).abs() < 1e-9, "{lo}..{hi}");
        assert_eq!(fitted_range([f64::NAN]), (0.0, 1.0));
    }

    /// Axis titles and legends are words: every letter and digit has a glyph, and no two
    /// letters share one.
    #[test]
    fn every_letter_and_digit_has_its_own_glyph() {
        let mut seen = std::collections::HashMap::new();
        for c in ('A'..='Z').chain('0'..='9') {
            let rows = super::glyph(c).unwrap_or_else(|| panic!("no glyph for {c}"));
            if let Some(other) = seen.insert(rows, c) {
                assert!(
                    c.is_ascii_digit() != other.is_ascii_digit(),
                    "{other} and {c} look the same"
                );
            }
        }
    }
}
