//! Pretrained models' tokenizers, through Hugging Face's `tokenizers` crate: a `tokenizer.json`,
//! a BERT `vocab.txt` (WordPiece), or the byte-level BPE a GGUF file stores in its metadata.
//!
//! A GGUF file holds the vocabulary (`tokenizer.ggml.tokens`), the merges
//! (`tokenizer.ggml.merges`), each token's type (`tokenizer.ggml.token_type`: 3 marks control
//! tokens such as `<|im_start|>`) and the name of the pre-tokenizer (`tokenizer.ggml.pre`). The
//! pre-tokenizers are llama.cpp's: `gpt2`/`default` split words with GPT-2's pattern; `smollm`
//! (SmolLM, StarCoder) first splits every digit off on its own, as the models' own
//! `tokenizer.json` does. Others are refused by name rather than tokenised differently from how
//! the model was trained.
//!
//! Encoding never adds special tokens (`[CLS]`, `<s>`): the models that wrap segments in them
//! (RMT on BERT) place them themselves.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, PreTokenizerWrapper, Tokenizer};

use crate::error::{Error, Result};
use crate::gguf::{Gguf, Value};

/// A pretrained model's tokenizer.
#[derive(Clone)]
pub struct Pretrained {
    inner: Tokenizer,
    path: PathBuf,
}

impl std::fmt::Debug for Pretrained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pretrained")
            .field("path", &self.path)
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

/// GGUF token type of control tokens (llama.cpp's `LLAMA_TOKEN_TYPE_CONTROL`).
const CONTROL: u64 = 3;

impl Pretrained {
    /// The tokenizer of a pretrained model at `path`, read once per process and shared (see
    /// [`Pretrained::open`]).
    pub fn shared(path: &Path) -> Result<Arc<Self>> {
        static LOADED: Mutex<Vec<(PathBuf, Arc<Pretrained>)>> = Mutex::new(Vec::new());
        let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, t)) = loaded.iter().find(|(p, _)| p == path) {
            return Ok(t.clone());
        }
        let tokenizer = Arc::new(Self::open(path)?);
        loaded.push((path.to_path_buf(), tokenizer.clone()));
        Ok(tokenizer)
    }

    /// The tokenizer of a pretrained model: a GGUF file's, a `tokenizer.json` or `vocab.txt`
    /// file, or a Hugging Face folder's (`tokenizer.json`, else `vocab.txt`).
    pub fn open(path: &Path) -> Result<Self> {
        if path.is_dir() {
            let json = path.join("tokenizer.json");
            return Self::from_file(&if json.is_file() {
                json
            } else {
                path.join("vocab.txt")
            });
        }
        if path.is_file() && crate::gguf::is_gguf(path)? {
            return Self::from_gguf(&Gguf::read(path)?, path);
        }
        Self::from_file(path)
    }

    /// Read a Hugging Face `tokenizer.json`, or a BERT `vocab.txt` (lower-casing WordPiece, as
    /// BERT's uncased models and all-MiniLM-L6-v2 use).
    pub fn from_file(path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::Backbone {
            path: path.to_path_buf(),
            reason,
        };
        if !path.is_file() {
            return Err(bad("no such file".into()));
        }
        let inner = if path.extension().is_some_and(|e| e == "txt") {
            let path_str = path
                .to_str()
                .ok_or_else(|| bad("not a UTF-8 path".into()))?;
            let model = WordPiece::from_file(path_str)
                .build()
                .map_err(|e| bad(format!("not a WordPiece vocabulary: {e}")))?;
            let mut tokenizer = Tokenizer::new(model);
            tokenizer
                .with_normalizer(Some(BertNormalizer::new(true, true, None, true)))
                .with_pre_tokenizer(Some(BertPreTokenizer))
                .with_decoder(Some(WordPieceDecoder::default()));
            tokenizer
        } else {
            let mut tokenizer = Tokenizer::from_file(path)
                .map_err(|e| bad(format!("not a tokenizer.json: {e}")))?;
            // remem cuts text into segments itself: a file's padding or truncation (BERT
            // files pad and cut to 128 or 512 tokens) would add ids or silently drop text.
            tokenizer.with_padding(None);
            tokenizer
                .with_truncation(None)
                .map_err(|e| bad(format!("cannot turn truncation off: {e}")))?;
            tokenizer
        };
        let tokenizer = Pretrained {
            inner,
            path: path.to_path_buf(),
        };
        if tokenizer.vocab_size() == 0 {
            return Err(bad("the vocabulary is empty".into()));
        }
        Ok(tokenizer)
    }

    /// The byte-level BPE stored in a GGUF file's metadata (`path` names the file in errors).
    pub fn from_gguf(gguf: &Gguf, path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::Backbone {
            path: path.to_path_buf(),
            reason,
        };
        let model = gguf.get("tokenizer.ggml.model")?.as_str().unwrap_or("");
        if model != "gpt2" {
            return Err(bad(format!(
                "tokenizer.ggml.model `{model}` is not supported (only `gpt2`, byte-level BPE)"
            )));
        }
        let strings = |key: &str| -> Result<Vec<String>> {
            let values = gguf.get(key)?.as_array().unwrap_or(&[]);
            values
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| bad(format!("`{key}` is not a list of strings")))
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges = strings("tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| bad(format!("merge `{m}` is not two tokens")))
            })
            .collect::<Result<Vec<_>>>()?;
        let pre = match gguf
            .metadata
            .get("tokenizer.ggml.pre")
            .and_then(Value::as_str)
        {
            None | Some("default" | "gpt2") => ByteLevel::new(false, true, true).into(),
            Some("smollm" | "starcoder" | "refact") => {
                let pieces: Vec<PreTokenizerWrapper> = vec![
                    Digits::new(true).into(),
                    ByteLevel::new(false, true, true).into(),
                ];
                PreTokenizerWrapper::from(Sequence::new(pieces))
            }
            Some(other) => {
                return Err(bad(format!(
                    "pre-tokenizer `{other}` is not supported (remem reads `gpt2`, `default` \
                     and `smollm`)"
                )));
            }
        };
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        if vocab.len() != tokens.len() {
            return Err(bad("the vocabulary lists a token twice".into()));
        }
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| bad(format!("the BPE does not build: {e}")))?;
        let mut inner = Tokenizer::new(bpe);
        inner
            .with_pre_tokenizer(Some(pre))
            .with_decoder(Some(ByteLevelDecoder::default()));
        if let Ok(types) = gguf.get("tokenizer.ggml.token_type") {
            let control: Vec<AddedToken> = types
                .as_array()
                .unwrap_or(&[])
                .iter()
                .zip(&tokens)
                .filter(|(t, _)| t.as_u64() == Some(CONTROL))
                .map(|(_, token)| AddedToken::from(token.clone(), true))
                .collect();
            inner.add_special_tokens(&control);
        }
        Ok(Pretrained {
            inner,
            path: path.to_path_buf(),
        })
    }

    /// The file the tokenizer was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Ids it can produce: `0..vocab_size`.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of `token` (a special token such as `[CLS]`, or any vocabulary entry).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Check the tokenizer fits a model with `vocab` embeddings: every id it writes must have
    /// one. (A model's table may be larger than its tokenizer's vocabulary: padding rows.)
    pub fn check_vocab(&self, vocab: usize) -> Result<()> {
        if self.vocab_size() > vocab {
            return Err(Error::Backbone {
                path: self.path.clone(),
                reason: format!(
                    "the tokenizer has {} tokens but the model only {vocab} embeddings: they \
                     are not a pair",
                    self.vocab_size()
                ),
            });
        }
        Ok(())
    }

    /// `text` as token ids, without special tokens around it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Input(format!("cannot tokenise: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Token ids back to text. An id outside the vocabulary is an error naming it.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.vocab_size()) {
            return Err(Error::Input(format!(
                "token id {id} is outside the tokenizer's vocabulary of {}",
                self.vocab_size()
            )));
        }
        self.inner
            .decode(ids, false)
            .map_err(|e| Error::Input(format!("cannot decode: {e}")))
    }
}
