//! Quadratic equations (RMT paper): an equation with integer roots in (-100, 100), shown as a
//! random multiple (±1..10) of its canonical form; the answer is the worked solution.
//!
//! ```text
//! 3x^2-12x+9=0 <sep> x^2-4x+3=0;D=(-4)^2-4*(3)=4;x=(4-2)/2=1;x=(4+2)/2=3;1,3 <sep>
//! ```
//! One sample in five has no real roots: its solution stops after `D=...;` with the answer `N`.
//! The character set is `0-9 + - * / ^ = ( ) ; , x D N`: 23 characters, 25 ids with pad and sep.

use rand::Rng;

use super::{SEP, Sample};

const CHARS: &str = "0123456789+-*/^=();,xDN";
/// Token ids: pad, sep, then the characters of `CHARS`.
pub const VOCAB: usize = 2 + CHARS.len();
/// The task's characters, `|` as separator.
pub fn tokenizer() -> crate::tokenizer::Tokenizer {
    crate::tokenizer::Tokenizer::Chars {
        alphabet: CHARS.into(),
        sep: '|',
    }
}

/// Longest sequence the generator writes, separators included.
pub const MAX_LEN: usize = 150;

fn encode(text: &str) -> Vec<u32> {
    text.chars()
        .map(|c| 2 + CHARS.find(c).expect("generator writes only CHARS") as u32)
        .collect()
}

/// `k x^2 + b x + c` written compactly (`-x^2+5x`, `3x^2-7`).
fn poly(a: i64, b: i64, c: i64) -> String {
    let mut s = match a {
        1 => "x^2".to_string(),
        -1 => "-x^2".to_string(),
        _ => format!("{a}x^2"),
    };
    match b {
        0 => {}
        1 => s.push_str("+x"),
        -1 => s.push_str("-x"),
        _ => s.push_str(&format!("{b:+}x")),
    }
    if c != 0 {
        s.push_str(&format!("{c:+}"));
    }
    s
}

fn paren(v: i64) -> String {
    if v < 0 {
        format!("({v})")
    } else {
        v.to_string()
    }
}

/// One equation and its solution.
pub fn sample(rng: &mut impl Rng) -> Sample {
    let (b, c, roots) = if rng.random_bool(0.8) {
        let r1 = rng.random_range(-99..=99i64);
        let r2 = rng.random_range(-99..=99i64);
        let (r1, r2) = (r1.min(r2), r1.max(r2));
        (-(r1 + r2), r1 * r2, Some((r1, r2)))
    } else {
        let b = rng.random_range(-20..=20i64);
        let c = b * b / 4 + 1 + rng.random_range(0..50i64);
        (b, c, None)
    };
    let mut k = rng.random_range(1..=10i64);
    if rng.random_bool(0.5) {
        k = -k;
    }
    let question = format!("{}=0", poly(k, k * b, k * c));
    let d = b * b - 4 * c;
    let mut solution = format!("{}=0;D={}^2-4*{}={d};", poly(1, b, c), paren(b), paren(c));
    match roots {
        Some((r1, r2)) => {
            let s = (d as f64).sqrt().round() as i64;
            debug_assert_eq!(s * s, d);
            solution.push_str(&format!(
                "x=({}-{s})/2={r1};x=({}+{s})/2={r2};{r1},{r2}",
                -b, -b
            ));
        }
        None => solution.push('N'),
    }
    let mut tokens = encode(&question);
    tokens.push(SEP);
    let start = tokens.len();
    tokens.extend(encode(&solution));
    tokens.push(SEP);
    let answer = (0..tokens.len()).map(|i| i >= start).collect();
    Sample { tokens, answer }
}

/// Turn token ids back into text (`|` for the separator), for messages and tests.
pub fn decode(tokens: &[u32]) -> String {
    tokens
        .iter()
        .map(|&t| match t {
            0 => '_',
            1 => '|',
            t => CHARS.chars().nth(t as usize - 2).unwrap_or('?'),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn solutions_are_right_and_fit() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut no_roots = 0;
        for _ in 0..500 {
            let s = sample(&mut rng);
            assert!(s.tokens.len() <= MAX_LEN, "{}", decode(&s.tokens));
            let text = decode(&s.tokens);
            let answer = text.trim_end_matches('|').rsplit(';').next().unwrap();
            if answer.ends_with('N') {
                no_roots += 1;
                continue;
            }
            let (r1, r2) = answer.split_once(',').unwrap();
            let (r1, r2): (i64, i64) = (r1.parse().unwrap(), r2.parse().unwrap());
            // The canonical form x^2 + bx + c has the roots r1, r2: b = -(r1+r2), c = r1 r2.
            let canonical = text.split('|').nth(1).unwrap().split('=').next().unwrap();
            assert_eq!(canonical, poly(1, -(r1 + r2), r1 * r2), "{text}");
        }
        assert!(
            (60..140).contains(&no_roots),
            "{no_roots} of 500 without real roots"
        );
        assert_eq!(VOCAB, 25);
    }
}
