//! Real text as bytes: a corpus of files split by document into train, validation and test.
//!
//! **Documents.** Every non-empty file under the given paths (folders are walked recursively in
//! name order; names starting with `.` are skipped) is a document. A file larger than
//! [`PART_BYTES`] is cut into consecutive parts of that size, each its own document, so a corpus
//! of one large file still has held-out text.
//!
//! **The split.** A document's split follows from its name alone: the FNV-1a hash of
//! `<path relative to the argument that named it>#<part>` modulo 20 gives test for 0, validation
//! for 1 and training otherwise (90/5/5). If that leaves test or validation empty, the training
//! document with the smallest hash moves there (test first). The rule never looks at the text,
//! so adding files never moves a document between splits except by that fallback, and no
//! held-out document is ever trained on.
//!
//! **Reading.** Nothing is read whole: training windows are positioned reads of one document,
//! and held-out documents are streamed in chunks.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::io::fnv1a;

/// Largest document: bigger files are cut into parts of this many bytes.
pub const PART_BYTES: u64 = 1 << 20;

/// Which part of the corpus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// What the model is trained on.
    Train,
    /// Held out; read by the evaluations during training.
    Validation,
    /// Held out; read by `remem eval`.
    Test,
}

/// One document: a file or a part of one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// The file.
    pub path: PathBuf,
    /// The name the split is computed from: `<relative path>#<part>`.
    pub name: String,
    /// First byte of the document in the file.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// Its split.
    pub split: Split,
}

/// The documents of a corpus, each assigned to a split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corpus {
    documents: Vec<Document>,
}

impl Corpus {
    /// The corpus of every file under `paths` (files or folders).
    ///
    /// # Errors
    /// [`Error::Input`] when `paths` is empty, names nothing readable, holds fewer than three
    /// non-empty documents (one each for training, validation and test); [`Error::Io`] for a
    /// path that cannot be read.
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        if paths.is_empty() {
            return Err(Error::Input("--data names no file or folder".into()));
        }
        let mut documents = Vec::new();
        for root in paths {
            let meta = std::fs::metadata(root).map_err(|e| Error::io(root, e))?;
            let mut files = Vec::new();
            if meta.is_dir() {
                walk(root, &mut files)?;
                if files.is_empty() {
                    return Err(Error::Input(format!(
                        "{}: the folder holds no file",
                        root.display()
                    )));
                }
            } else {
                files.push(root.clone());
            }
            for file in files {
                let len = std::fs::metadata(&file)
                    .map_err(|e| Error::io(&file, e))?
                    .len();
                // Readable at all: found now, not in the middle of training.
                File::open(&file).map_err(|e| Error::io(&file, e))?;
                let relative = file.strip_prefix(root).unwrap_or(&file);
                let relative = if relative.as_os_str().is_empty() {
                    file.file_name().map_or(file.as_path(), Path::new)
                } else {
                    relative
                };
                let mut start = 0;
                let mut part = 0;
                while start < len {
                    let n = PART_BYTES.min(len - start);
                    documents.push(Document {
                        path: file.clone(),
                        name: format!("{}#{part}", relative.display()),
                        start,
                        len: n,
                        split: Split::Train,
                    });
                    start += n;
                    part += 1;
                }
            }
        }
        if documents.len() < 3 {
            return Err(Error::Input(format!(
                "--data holds {} non-empty document(s); at least 3 are needed (training, \
                 validation and test each get one)",
                documents.len()
            )));
        }
        assign_splits(&mut documents);
        Ok(Corpus { documents })
    }

    /// Every document, in the order found.
    pub fn documents(&self) -> &[Document] {
        &self.documents
    }

    /// The documents of `split`.
    pub fn split(&self, split: Split) -> impl Iterator<Item = &Document> {
        self.documents.iter().filter(move |d| d.split == split)
    }

    /// Bytes in `split`.
    pub fn bytes(&self, split: Split) -> u64 {
        self.split(split).map(|d| d.len).sum()
    }

    /// The longest training document, in bytes.
    pub fn longest_train(&self) -> u64 {
        self.longest(Split::Train)
    }

    /// The longest document of `split`, in bytes.
    pub fn longest(&self, split: Split) -> u64 {
        self.split(split).map(|d| d.len).max().unwrap_or(0)
    }

    /// `len` bytes of the documents of `split` joined in the corpus's order into one loop
    /// (the last document followed by the first), from byte `offset` of the loop (taken
    /// modulo its length), into `out` (cleared first). A training run that carries its memory
    /// reads its consecutive windows this way ([`crate::task::Task::stream_sample`]).
    ///
    /// # Errors
    /// [`Error::Input`] when `split` holds no bytes; [`Error::Io`] when a file cannot be read.
    pub fn read_loop(
        &self,
        split: Split,
        offset: u64,
        len: usize,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let total = self.bytes(split);
        if total == 0 {
            return Err(Error::Input(format!("the {split:?} split holds no text")));
        }
        out.clear();
        let mut at = offset % total;
        let documents: Vec<&Document> = self.split(split).collect();
        let mut i = 0;
        while at >= documents[i].len {
            at -= documents[i].len;
            i += 1;
        }
        while out.len() < len {
            let doc = documents[i];
            let n = ((doc.len - at) as usize).min(len - out.len());
            let mut file = File::open(&doc.path).map_err(|e| Error::io(&doc.path, e))?;
            file.seek(SeekFrom::Start(doc.start + at))
                .map_err(|e| Error::io(&doc.path, e))?;
            let from = out.len();
            out.resize(from + n, 0);
            file.read_exact(&mut out[from..])
                .map_err(|e| Error::io(&doc.path, e))?;
            at = 0;
            i = (i + 1) % documents.len();
        }
        Ok(())
    }

    /// A window of `len` consecutive bytes of one training document: the document drawn with
    /// probability proportional to the windows it holds, the start uniformly.
    ///
    /// # Errors
    /// [`Error::Input`] when no training document holds `len` bytes; [`Error::Io`] when a
    /// file cannot be read (changed or removed since the corpus was opened).
    pub fn window(&self, len: usize, rng: &mut impl Rng) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.window_into(Split::Train, len, rng, &mut out)?;
        Ok(out)
    }

    /// [`Corpus::window`] from the documents of `split`, into `out` (cleared first), reusing
    /// its allocation.
    ///
    /// # Errors
    /// As [`Corpus::open_window`]; [`Error::Io`] when the file cannot be read.
    pub fn window_into(
        &self,
        split: Split,
        len: usize,
        rng: &mut impl Rng,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let mut window = self.open_window(split, len, rng)?;
        out.clear();
        window.read(len, out)
    }

    /// A window of `len` consecutive bytes of one document of `split`, drawn as
    /// [`Corpus::window`] draws (the same draw from `rng`), opened to be read front to back in
    /// parts: the streamed retention samples read millions of bytes of noise this way while
    /// holding a few KiB of it.
    ///
    /// # Errors
    /// [`Error::Input`] when no document of `split` holds `len` bytes; [`Error::Io`] when the
    /// file cannot be opened (changed or removed since the corpus was opened).
    pub fn open_window(&self, split: Split, len: usize, rng: &mut impl Rng) -> Result<Window> {
        let len64 = len as u64;
        let fits: Vec<&Document> = self.split(split).filter(|d| d.len >= len64).collect();
        let total: u64 = fits.iter().map(|d| d.len - len64 + 1).sum();
        if total == 0 {
            return Err(Error::Input(format!(
                "no {split:?} document holds {len} bytes (the longest has {}): use shorter or \
                 fewer segments",
                self.longest(split)
            )));
        }
        let mut pick = rng.random_range(0..total);
        let doc = fits
            .iter()
            .find(|d| {
                let n = d.len - len64 + 1;
                if pick < n {
                    true
                } else {
                    pick -= n;
                    false
                }
            })
            .expect("pick < total");
        let mut file = File::open(&doc.path).map_err(|e| Error::io(&doc.path, e))?;
        file.seek(SeekFrom::Start(doc.start + pick))
            .map_err(|e| Error::io(&doc.path, e))?;
        Ok(Window {
            file,
            path: doc.path.clone(),
            left: len,
        })
    }

    /// The text of `split`'s documents, in the corpus's order, each followed by a blank line,
    /// up to `max_bytes` (the page's retention demo buries facts in the test documents this
    /// way: `remem data --split test --out web/assets/noise.txt`).
    ///
    /// # Errors
    /// [`Error::Io`] when a file cannot be read.
    pub fn text(&self, split: Split, max_bytes: usize) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for doc in self.split(split) {
            if out.len() >= max_bytes {
                break;
            }
            let want = (max_bytes - out.len()).min(doc.len as usize);
            let at = out.len();
            out.resize(at + want, 0);
            let mut reader = Self::reader(doc)?;
            reader
                .read_exact(&mut out[at..])
                .map_err(|e| Error::io(&doc.path, e))?;
            out.extend_from_slice(b"\n\n");
        }
        out.truncate(max_bytes);
        Ok(out)
    }

    /// A reader of `doc`'s bytes, from its start.
    pub fn reader(doc: &Document) -> Result<impl Read> {
        let mut file = File::open(&doc.path).map_err(|e| Error::io(&doc.path, e))?;
        file.seek(SeekFrom::Start(doc.start))
            .map_err(|e| Error::io(&doc.path, e))?;
        Ok(std::io::BufReader::new(file).take(doc.len))
    }
}

/// An open window of one document ([`Corpus::open_window`]), read front to back.
#[derive(Debug)]
pub struct Window {
    file: File,
    path: PathBuf,
    left: usize,
}

impl Window {
    /// Bytes of the window not yet read.
    pub fn left(&self) -> usize {
        self.left
    }

    /// Append the next `n` bytes of the window (fewer at its end) to `out`.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read (changed since the corpus was opened).
    pub fn read(&mut self, n: usize, out: &mut Vec<u8>) -> Result<()> {
        let n = n.min(self.left);
        let at = out.len();
        out.resize(at + n, 0);
        self.file
            .read_exact(&mut out[at..])
            .map_err(|e| Error::io(&self.path, e))?;
        self.left -= n;
        Ok(())
    }
}

/// Files under `dir`, recursively, in name order, skipping names that start with `.`.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|e| Error::io(dir, e)))
        .collect::<Result<_>>()?;
    entries.sort();
    for path in entries {
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            continue;
        }
        if path.is_dir() {
            walk(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// The split rule of the module's documentation.
fn assign_splits(documents: &mut [Document]) {
    let hash = |d: &Document| fnv1a(d.name.as_bytes());
    for d in documents.iter_mut() {
        d.split = match hash(d) % 20 {
            0 => Split::Test,
            1 => Split::Validation,
            _ => Split::Train,
        };
    }
    for split in [Split::Test, Split::Validation] {
        if documents.iter().any(|d| d.split == split) {
            continue;
        }
        if let Some(d) = documents
            .iter_mut()
            .filter(|d| d.split == Split::Train)
            .min_by_key(|d| hash(d))
        {
            d.split = split;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn corpus(files: &[(&str, &[u8])]) -> (tempfile::TempDir, Corpus) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let corpus = Corpus::open(&[dir.path().to_path_buf()]).unwrap();
        (dir, corpus)
    }

    #[test]
    fn every_split_gets_a_document_and_none_is_shared() {
        let names: Vec<String> = (0..40).map(|i| format!("d/{i}.txt")).collect();
        let files: Vec<(&str, &[u8])> = names
            .iter()
            .map(|n| (n.as_str(), &b"some text"[..]))
            .collect();
        let (_dir, c) = corpus(&files);
        for split in [Split::Train, Split::Validation, Split::Test] {
            assert!(c.split(split).count() > 0, "{split:?} is empty");
        }
        assert_eq!(c.documents().len(), 40);
        // A document's split depends on its name only: the same files in another order agree.
        let (_dir2, again) = corpus(&files.iter().rev().cloned().collect::<Vec<_>>());
        for d in c.documents() {
            let other = again.documents().iter().find(|o| o.name == d.name).unwrap();
            assert_eq!(d.split, other.split, "{}", d.name);
        }
    }

    #[test]
    fn the_loop_joins_a_split_in_order_and_wraps_around() {
        // Document i holds the bytes 'a'+i, 'A'+i, so the joined text says where it came from.
        let files: Vec<(String, Vec<u8>)> = (0..26u8)
            .map(|i| (format!("{i:02}.txt"), vec![b'a' + i, b'A' + i]))
            .collect();
        let refs: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(n, t)| (n.as_str(), t.as_slice()))
            .collect();
        let (_dir, c) = corpus(&refs);
        let joined: Vec<u8> = c
            .split(Split::Train)
            .flat_map(|d| {
                files
                    .iter()
                    .find(|(n, _)| *n == d.name.trim_end_matches("#0"))
                    .unwrap()
                    .1
                    .clone()
            })
            .collect();
        let total = joined.len() as u64;
        assert_eq!(total, c.bytes(Split::Train));
        let mut out = Vec::new();
        for (offset, len) in [
            (0, 5),
            (1, 2),
            (3, total as usize),
            (total - 1, 3),
            (total + 4, 7),
        ] {
            c.read_loop(Split::Train, offset, len, &mut out).unwrap();
            let want: Vec<u8> = (0..len as u64)
                .map(|k| joined[((offset + k) % total) as usize])
                .collect();
            assert_eq!(out, want, "offset {offset}, len {len}");
        }
        // Held-out text never enters the training loop.
        c.read_loop(Split::Train, 0, 3 * total as usize, &mut out)
            .unwrap();
        for d in c.split(Split::Test) {
            let held = files
                .iter()
                .find(|(n, _)| *n == d.name.trim_end_matches("#0"))
                .unwrap();
            assert!(
                !out.windows(2).any(|w| w == held.1.as_slice()),
                "{}",
                d.name
            );
        }
    }

    #[test]
    fn windows_come_from_training_documents_only() {
        // Document i is 50 copies of the byte b'A' + i, so a window says where it came from.
        let files: Vec<(String, Vec<u8>)> = (0..30u8)
            .map(|i| (format!("{i}.txt"), vec![b'A' + i; 50]))
            .collect();
        let refs: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(n, t)| (n.as_str(), t.as_slice()))
            .collect();
        let (_dir, c) = corpus(&refs);
        let byte = |d: &Document| b'A' + d.name.split('.').next().unwrap().parse::<u8>().unwrap();
        let trained: Vec<u8> = c.split(Split::Train).map(byte).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..500 {
            let w = c.window(20, &mut rng).unwrap();
            assert!(w.iter().all(|&b| b == w[0]), "a window spans documents");
            assert!(trained.contains(&w[0]), "a held-out document was sampled");
            seen.insert(w[0]);
        }
        assert_eq!(
            seen.len(),
            trained.len(),
            "every training document is drawn"
        );
        assert!(c.window(51, &mut rng).is_err());
    }

    #[test]
    fn large_files_are_cut_into_parts_and_bad_paths_are_named() {
        let big = vec![b'x'; (2 * PART_BYTES + 10) as usize];
        let (_dir, c) = corpus(&[("big.txt", &big)]);
        let lens: Vec<u64> = c.documents().iter().map(|d| d.len).collect();
        assert_eq!(lens, vec![PART_BYTES, PART_BYTES, 10]);
        let err = Corpus::open(&[]).unwrap_err().to_string();
        assert!(err.contains("--data"), "{err}");
        let err = Corpus::open(&["/no/such/file".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("/no/such/file"), "{err}");
        let empty = tempfile::tempdir().unwrap();
        let err = Corpus::open(&[empty.path().to_path_buf()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds no file"), "{err}");
        let (_d, _) = corpus(&[("a", b"1"), ("b", b"2"), ("c", b"3")]);
        let one = tempfile::tempdir().unwrap();
        std::fs::write(one.path().join("a"), b"abc").unwrap();
        let err = Corpus::open(&[one.path().to_path_buf()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least 3"), "{err}");
    }
}
