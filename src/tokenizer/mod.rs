//! Text to token ids and back, recorded in a model's config so a checkpoint knows how to read text.
//!
//! - [`Tokenizer::Bytes`]: one token per byte, so any file can be streamed with no vocabulary file.
//! - [`Tokenizer::Chars`]: one token per character of a small alphabet (the synthetic tasks:
//!   `0123456789|` for copy, where `|` is the separator).
//! - [`Tokenizer::Ids`]: whitespace-separated decimal token ids, for any vocabulary.
//!
//! Encoding is incremental ([`Encoder`]): input arrives in chunks of bytes of any size and a
//! character or number split across two chunks is joined, so a file of many gigabytes is read a
//! piece at a time.
//!
//! Pretrained models bring their own tokenizers ([`pretrained::Pretrained`]: `tokenizer.json`,
//! `vocab.txt`, or the BPE inside a GGUF file).

#[cfg(not(target_family = "wasm"))]
pub mod pretrained;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::task::{PAD, SEP};

/// How a model's token ids map to text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Tokenizer {
    /// Token id = byte value (vocabulary of at least 256).
    Bytes,
    /// `alphabet`'s i-th character is id `2 + i`; `sep` is the separator (id 1). Whitespace that
    /// is not in the alphabet is skipped.
    Chars {
        /// Characters of ids 2, 3, ...
        alphabet: String,
        /// The separator's character.
        sep: char,
    },
    /// Whitespace-separated decimal ids.
    Ids,
    /// A pretrained model's own tokenizer ([`pretrained::Pretrained::open`]): a GGUF file's
    /// BPE, a `tokenizer.json`, a `vocab.txt`, or the tokenizer file of a Hugging Face folder.
    /// Read once per process and shared.
    Pretrained {
        /// The file or folder.
        path: std::path::PathBuf,
    },
}

/// Characters for the symbols of copy and reverse, in order.
const SYMBOLS: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

impl Tokenizer {
    /// The character tokenizer for `symbols` task symbols (`0-9`, then `a-z`, `A-Z`) and `|` as
    /// separator, or [`Tokenizer::Ids`] when there are more symbols than characters.
    pub fn symbols(symbols: usize) -> Self {
        if symbols > SYMBOLS.len() {
            return Tokenizer::Ids;
        }
        Tokenizer::Chars {
            alphabet: SYMBOLS[..symbols].to_string(),
            sep: '|',
        }
    }

    /// Ids this tokenizer can write: a model's vocabulary must hold at least this many.
    pub fn min_vocab(&self) -> usize {
        match self {
            Tokenizer::Bytes => 256,
            Tokenizer::Chars { alphabet, .. } => 2 + alphabet.chars().count(),
            Tokenizer::Ids => 1,
            #[cfg(not(target_family = "wasm"))]
            Tokenizer::Pretrained { .. } => self.pretrained().map_or(1, |p| p.vocab_size()),
            #[cfg(target_family = "wasm")]
            Tokenizer::Pretrained { .. } => 1,
        }
    }

    /// The loaded pretrained tokenizer of [`Tokenizer::Pretrained`] (read at the first call).
    #[cfg(not(target_family = "wasm"))]
    pub fn pretrained(&self) -> Result<std::sync::Arc<pretrained::Pretrained>> {
        match self {
            Tokenizer::Pretrained { path } => pretrained::Pretrained::shared(path),
            _ => Err(Error::Input("not a pretrained tokenizer".into())),
        }
    }

    /// Check the tokenizer fits a vocabulary of `vocab` ids and is unambiguous.
    pub fn validate(&self, vocab: usize) -> Result<()> {
        #[cfg(not(target_family = "wasm"))]
        if let Tokenizer::Pretrained { .. } = self {
            return self.pretrained()?.check_vocab(vocab);
        }
        if let Tokenizer::Chars { alphabet, sep } = self {
            let mut seen: Vec<char> = alphabet.chars().collect();
            seen.push(*sep);
            seen.sort_unstable();
            if seen.windows(2).any(|w| w[0] == w[1]) || seen.iter().any(|c| c.is_whitespace()) {
                return Err(Error::config(
                    "model.tokenizer",
                    "characters must be distinct and not whitespace",
                ));
            }
        }
        if vocab < self.min_vocab() {
            return Err(Error::config(
                "model.tokenizer",
                format!(
                    "needs a vocabulary of at least {}, the model has {vocab}",
                    self.min_vocab()
                ),
            ));
        }
        Ok(())
    }

    /// An incremental encoder for a model with `vocab` ids.
    pub fn encoder(&self, vocab: usize) -> Encoder<'_> {
        Encoder {
            tokenizer: self,
            vocab,
            carry: Vec::new(),
            offset: 0,
        }
    }

    /// Encode a whole string.
    pub fn encode(&self, text: &str, vocab: usize) -> Result<Vec<u32>> {
        let mut enc = self.encoder(vocab);
        let mut ids = enc.push(text.as_bytes())?;
        ids.extend(enc.finish()?);
        Ok(ids)
    }

    /// Text for `ids` (padding shows as `_`, an id the tokenizer has no text for as `<id>`).
    pub fn decode(&self, ids: &[u32]) -> String {
        match self {
            Tokenizer::Bytes => String::from_utf8_lossy(
                &ids.iter()
                    .map(|&i| u8::try_from(i).unwrap_or(b'?'))
                    .collect::<Vec<_>>(),
            )
            .into_owned(),
            Tokenizer::Chars { alphabet, sep } => ids
                .iter()
                .map(|&i| match i {
                    PAD => "_".to_string(),
                    SEP => sep.to_string(),
                    _ => alphabet
                        .chars()
                        .nth(i as usize - 2)
                        .map_or_else(|| format!("<{i}>"), String::from),
                })
                .collect(),
            Tokenizer::Ids => ids.iter().map(u32::to_string).collect::<Vec<_>>().join(" "),
            #[cfg(not(target_family = "wasm"))]
            Tokenizer::Pretrained { .. } => match self.pretrained().and_then(|p| p.decode(ids)) {
                Ok(text) => text,
                Err(_) => ids.iter().map(|i| format!("<{i}>")).collect(),
            },
            #[cfg(target_family = "wasm")]
            Tokenizer::Pretrained { .. } => ids.iter().map(|i| format!("<{i}>")).collect(),
        }
    }
}

/// Turns a stream of byte chunks into token ids (see [`Tokenizer::encoder`]).
#[derive(Debug)]
pub struct Encoder<'a> {
    tokenizer: &'a Tokenizer,
    vocab: usize,
    /// Bytes of an unfinished character or number from the previous chunk.
    carry: Vec<u8>,
    /// Bytes consumed before `carry`, to name the position of a bad input.
    offset: u64,
}

impl Encoder<'_> {
    /// Encode the next chunk; an incomplete character or number at its end waits for the next.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<u32>> {
        if *self.tokenizer == Tokenizer::Bytes {
            self.offset += chunk.len() as u64;
            return Ok(chunk.iter().map(|&b| b as u32).collect());
        }
        self.carry.extend_from_slice(chunk);
        let bytes = std::mem::take(&mut self.carry);
        let (done, rest) = self.split_complete(&bytes)?;
        // A pretrained tokenizer waits for a line break (below); the others for a character
        // or a number.
        let longest = match self.tokenizer {
            Tokenizer::Pretrained { .. } => usize::MAX,
            _ => 32,
        };
        if rest.len() > longest {
            return Err(Error::Input(format!(
                "no token boundary in the 32 bytes after byte {}",
                self.offset + done as u64
            )));
        }
        let ids = self.encode_complete(&bytes[..done])?;
        self.offset += done as u64;
        self.carry = rest.to_vec();
        Ok(ids)
    }

    /// Encode what is left at the end of the input.
    pub fn finish(&mut self) -> Result<Vec<u32>> {
        let bytes = std::mem::take(&mut self.carry);
        if std::str::from_utf8(&bytes).is_err() {
            return Err(Error::Input(format!(
                "the input ends inside a UTF-8 character (byte {})",
                self.offset
            )));
        }
        let ids = self.encode_complete(&bytes)?;
        self.offset += bytes.len() as u64;
        Ok(ids)
    }

    /// Where the complete part of `bytes` ends: before a trailing partial UTF-8 character, and
    /// for ids before a trailing number that may continue in the next chunk.
    fn split_complete<'b>(&self, bytes: &'b [u8]) -> Result<(usize, &'b [u8])> {
        let valid = match std::str::from_utf8(bytes) {
            Ok(_) => bytes.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(e) => {
                return Err(Error::Input(format!(
                    "the input is not UTF-8 text (byte {})",
                    self.offset + e.valid_up_to() as u64
                )));
            }
        };
        let mut end = valid;
        if *self.tokenizer == Tokenizer::Ids {
            end = bytes[..valid]
                .iter()
                .rposition(u8::is_ascii_whitespace)
                .map_or(0, |p| p + 1);
        }
        if let Tokenizer::Pretrained { .. } = self.tokenizer {
            // After the last single line break between two non-spaces: the pre-tokenizers
            // (GPT-2's pattern, BERT's whitespace split) make the break a piece of its own there,
            // so encoding the parts apart gives the ids of encoding them together. (After a run
            // of spaces it would not: GPT-2's pattern splits a run's last space off only when a
            // word follows.) Text with no such break is cut at its last space once it passes
            // 1 MiB, where the ids near the cut may differ from the whole text's.
            let space = |b: u8| b.is_ascii_whitespace();
            end = (2..valid)
                .rev()
                .find(|&p| bytes[p - 1] == b'\n' && !space(bytes[p - 2]) && !space(bytes[p]))
                .unwrap_or(0);
            if end == 0 && valid > 1 << 20 {
                end = bytes[..valid]
                    .iter()
                    .rposition(|&b| space(b))
                    .map_or(valid, |p| p + 1);
            }
        }
        Ok((end, &bytes[end..]))
    }

    fn encode_complete(&self, bytes: &[u8]) -> Result<Vec<u32>> {
        if *self.tokenizer == Tokenizer::Bytes {
            return Ok(bytes.iter().map(|&b| b as u32).collect());
        }
        let text = std::str::from_utf8(bytes).expect("split at a character boundary");
        let at = |i: usize| self.offset + i as u64;
        match self.tokenizer {
            Tokenizer::Bytes => unreachable!("returned above"),
            Tokenizer::Chars { alphabet, sep } => {
                let mut ids = Vec::with_capacity(text.len());
                for (i, c) in text.char_indices() {
                    if c == *sep {
                        ids.push(SEP);
                    } else if let Some(k) = alphabet.chars().position(|a| a == c) {
                        ids.push(2 + k as u32);
                    } else if !c.is_whitespace() {
                        return Err(Error::Input(format!(
                            "character {c:?} at byte {} is not in the model's vocabulary \
                             (`{alphabet}` and `{sep}` as separator)",
                            at(i)
                        )));
                    }
                }
                Ok(ids)
            }
            #[cfg(not(target_family = "wasm"))]
            Tokenizer::Pretrained { .. } => {
                let ids = self.tokenizer.pretrained()?.encode(text)?;
                if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.vocab) {
                    return Err(Error::Input(format!(
                        "the tokenizer gives id {id}, outside the model's vocabulary (0..{})",
                        self.vocab
                    )));
                }
                Ok(ids)
            }
            #[cfg(target_family = "wasm")]
            Tokenizer::Pretrained { .. } => Err(Error::Input(
                "pretrained tokenizers are not available in the browser build".into(),
            )),
            Tokenizer::Ids => {
                let mut ids = Vec::new();
                let mut pos = 0;
                for word in text.split_ascii_whitespace() {
                    let i = pos + text[pos..].find(word).expect("word is in text");
                    pos = i + word.len();
                    let id: u32 = word.parse().map_err(|_| {
                        Error::Input(format!("`{word}` at byte {} is not a token id", at(i)))
                    })?;
                    if id as usize >= self.vocab {
                        return Err(Error::Input(format!(
                            "token id {id} at byte {} is outside the vocabulary (0..{})",
                            at(i),
                            self.vocab
                        )));
                    }
                    ids.push(id);
                }
                Ok(ids)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chars_round_trip_and_name_a_stray_character() {
        let t = Tokenizer::symbols(10);
        let ids = t.encode("0123|31\n", 12).unwrap();
        assert_eq!(ids, vec![2, 3, 4, 5, SEP, 5, 3]);
        assert_eq!(t.decode(&ids), "0123|31");
        let err = t.encode("01x", 12).unwrap_err().to_string();
        assert!(err.contains("'x'") && err.contains("byte 2"), "{err}");
    }

    #[test]
    fn chunks_split_anywhere_give_the_same_ids() {
        let cases = [
            (Tokenizer::Ids, "3 14 15 9 2 6\n5 3 5"),
            (
                Tokenizer::Chars {
                    alphabet: "aé€b".into(),
                    sep: '|',
                },
                "aé€|bé€a",
            ),
            (Tokenizer::Bytes, "any bytes at all, é"),
        ];
        for (t, text) in cases {
            let whole = t.encode(text, 256).unwrap();
            for cut in 0..=text.len() {
                let (a, b) = text.as_bytes().split_at(cut);
                let mut enc = t.encoder(256);
                let mut ids = enc.push(a).unwrap();
                ids.extend(enc.push(b).unwrap());
                ids.extend(enc.finish().unwrap());
                assert_eq!(ids, whole, "{t:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn ids_outside_the_vocabulary_and_bad_text_are_errors() {
        let err = Tokenizer::Ids.encode("1 2 12", 12).unwrap_err().to_string();
        assert!(
            err.contains("token id 12") && err.contains("0..12"),
            "{err}"
        );
        let err = Tokenizer::Ids.encode("1 two", 12).unwrap_err().to_string();
        assert!(err.contains("`two`"), "{err}");
        let chars = Tokenizer::symbols(10);
        let mut enc = chars.encoder(12);
        assert!(enc.push(&[0xff, b'1']).is_err());
        let mut enc = chars.encoder(12);
        enc.push(&[0xc3]).unwrap();
        assert!(enc.finish().is_err());
        assert!(Tokenizer::Bytes.validate(100).is_err());
        assert!(Tokenizer::symbols(10).validate(12).is_ok());
    }
}
