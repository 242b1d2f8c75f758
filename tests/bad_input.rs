//! The bad-input suite: well over a hundred wrong configs, flags, checkpoints, saved states,
//! stream inputs, run folders and library calls. Each command case asserts the exit code (1
//! for remem's own errors, 2 for command-line usage errors), that the message names the
//! culprit, that nothing panicked, and that no file of the fixture changed and none appeared.
//! A second test kills a short training with SIGKILL several times and checks that the resumed
//! run's metrics equal an uninterrupted run's.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::TINY;
use safetensors::{Dtype, SafeTensors};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_remem"))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Run `remem train` with TINY and `extra` in `cwd`, and require success.
fn train_ok(cwd: &Path, extra: &[&str]) {
    let out = bin()
        .current_dir(cwd)
        .arg("train")
        .args(TINY)
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files.insert(path.clone(), Vec::new());
                todo.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// A remem file taken apart: damaged parts are sealed again with a valid checksum, so the
/// checks behind the checksum are what must catch them.
struct Parts {
    metadata: BTreeMap<String, String>,
    tensors: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>,
}

impl Parts {
    fn read(bytes: &[u8]) -> Self {
        let file = SafeTensors::deserialize(bytes).unwrap();
        let (_, header) = SafeTensors::read_metadata(bytes).unwrap();
        Parts {
            metadata: header.metadata().clone().unwrap().into_iter().collect(),
            tensors: file
                .tensors()
                .into_iter()
                .map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
                .collect(),
        }
    }

    /// The file with a checksum that matches its (damaged) content.
    fn seal(&self) -> Vec<u8> {
        let sum = remem::io::digest(
            self.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            self.tensors
                .iter()
                .map(|(n, (d, s, b))| (n.as_str(), *d, s.as_slice(), b.as_slice())),
        );
        let mut metadata = self.metadata.clone();
        metadata.insert("remem.checksum".into(), format!("{sum:016x}"));
        let views: Vec<_> = self
            .tensors
            .iter()
            .map(|(n, (d, s, b))| {
                (
                    n.clone(),
                    safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
                )
            })
            .collect();
        safetensors::serialize(views, Some(metadata.into_iter().collect())).unwrap()
    }

    /// `f` applied to a copy, sealed.
    fn with(&self, f: impl FnOnce(&mut Parts)) -> Vec<u8> {
        let mut copy = Parts {
            metadata: self.metadata.clone(),
            tensors: self.tensors.clone(),
        };
        f(&mut copy);
        copy.seal()
    }
}

/// Where `needle` starts in `bytes`.
fn find(bytes: &[u8], needle: &[u8]) -> usize {
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("no {:?} in the file", String::from_utf8_lossy(needle)))
}

/// Where tensor `name`'s data starts in the safetensors file `bytes`.
fn data_at(bytes: &[u8], name: &str) -> usize {
    let file = SafeTensors::deserialize(bytes).unwrap();
    file.tensor(name).unwrap().data().as_ptr() as usize - bytes.as_ptr() as usize
}

/// `bytes` with one bit flipped at `at`, not resealed.
fn flipped(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut bytes = bytes.to_vec();
    bytes[at] ^= 0x01;
    bytes
}

/// One command that must fail.
struct Case {
    args: Vec<String>,
    stdin: Option<Vec<u8>>,
    code: i32,
    expect: Vec<String>,
}

fn case(args: &[&str], code: i32, expect: &[&str]) -> Case {
    Case {
        args: args.iter().map(|s| s.to_string()).collect(),
        stdin: None,
        code,
        expect: expect.iter().map(|s| s.to_string()).collect(),
    }
}

/// Run `case` in `cwd` and check it, returning a description of what went wrong.
fn check(cwd: &Path, case: &Case) -> Option<String> {
    let mut cmd = bin();
    cmd.current_dir(cwd)
        .args(&case.args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if case.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = &case.stdin {
        let mut pipe = child.stdin.take().unwrap();
        let _ = pipe.write_all(input);
    }
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    let mut problems = Vec::new();
    if out.status.code() != Some(case.code) {
        problems.push(format!(
            "exit {:?}, expected {}",
            out.status.code(),
            case.code
        ));
    }
    for want in &case.expect {
        if !err.contains(want.as_str()) {
            problems.push(format!("no `{want}` in the message"));
        }
    }
    if err.contains("panicked") {
        problems.push("panicked".into());
    }
    if case.code == 1 {
        // remem's own errors are one short line, after at most the device it opened (clap's
        // usage errors have their own layout).
        let lines: Vec<&str> = err.lines().filter(|l| !l.starts_with("device: ")).collect();
        if lines.len() != 1 || !lines[0].starts_with("error: ") || err.len() > 1000 {
            problems.push(format!("not one short error line ({} bytes)", err.len()));
        }
    }
    (!problems.is_empty()).then(|| {
        format!(
            "{}: {}\n    stderr: {err}",
            problems.join(", "),
            case.args.join(" ")
        )
    })
}

/// The fixture: two trained runs, a model-only export, saved states and damaged copies of
/// them, written once; every case runs against it and must leave it as it was.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        train_ok(
            d,
            &[
                "--steps",
                "4",
                "--checkpoint-every",
                "2",
                "--run-dir",
                "run",
            ],
        );
        train_ok(d, &["--steps", "2", "--model", "xl", "--run-dir", "xl"]);
        let ok = |args: &[&str]| {
            let out = bin().current_dir(d).args(args).output().unwrap();
            assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        };
        ok(&[
            "export",
            "--checkpoint",
            "run",
            "--out",
            "export.safetensors",
        ]);
        let stream = ["stream", "--device", "cpu", "--quiet", "--generate", "0"];
        ok(&[
            &stream[..],
            &[
                "--checkpoint",
                "run",
                "--text",
                "0123",
                "--save-state",
                "good.state",
            ],
        ]
        .concat());
        ok(&[
            &stream[..],
            &[
                "--checkpoint",
                "xl",
                "--text",
                "0123",
                "--save-state",
                "xl.state",
            ],
        ]
        .concat());

        let write = |name: &str, bytes: &[u8]| std::fs::write(d.join(name), bytes).unwrap();
        // Damaged checkpoints.
        let ck = std::fs::read(d.join("run/checkpoint.safetensors")).unwrap();
        let mut corrupt = ck.clone();
        corrupt[ck.len() / 2] ^= 0xff;
        write("corrupt.safetensors", &corrupt);
        write("truncated.safetensors", &ck[..ck.len() / 3]);
        write("empty.safetensors", b"");
        write("text.safetensors", b"hello, I am not a checkpoint\n");
        let parts = Parts::read(&ck);
        write(
            "version.safetensors",
            &parts.with(|p| {
                p.metadata.insert("remem.format".into(), "77".into());
            }),
        );
        write(
            "foreign.safetensors",
            &parts.with(|p| p.metadata.retain(|k, _| !k.starts_with("remem."))),
        );
        // A checkpoint of an earlier build (remem's format 1), converted by `remem export`.
        write(
            "legacy.remem",
            &std::fs::read(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/legacy-copy-rmt.remem"
            ))
            .unwrap(),
        );
        std::fs::create_dir(d.join("empty-run")).unwrap();
        std::fs::create_dir(d.join("corrupt-run")).unwrap();
        write("corrupt-run/checkpoint.safetensors", &corrupt);
        write(
            "corrupt-run/config.toml",
            &std::fs::read(d.join("run/config.toml")).unwrap(),
        );
        std::fs::create_dir(d.join("legacy-run")).unwrap();
        write(
            "legacy-run/checkpoint.remem",
            &std::fs::read(d.join("legacy.remem")).unwrap(),
        );
        write(
            "legacy-run/config.toml",
            &std::fs::read(d.join("run/config.toml")).unwrap(),
        );
        std::fs::create_dir(d.join("export-run")).unwrap();
        write(
            "export-run/checkpoint.safetensors",
            &std::fs::read(d.join("export.safetensors")).unwrap(),
        );
        write("a-file", b"x");
        // A checkpoint whose weights belong to another model (the Transformer-XL run's).
        let run = remem::train::Checkpoint::load(&d.join("run/checkpoint.safetensors")).unwrap();
        let xl = remem::train::Checkpoint::load(&d.join("xl/checkpoint.safetensors")).unwrap();
        remem::train::Checkpoint {
            weights: xl.weights,
            param_ids: xl.param_ids,
            ..run
        }
        .save(&d.join("mismatch.safetensors"))
        .unwrap();
        std::fs::create_dir(d.join("short-text")).unwrap();
        for name in ["a.txt", "b.txt", "c.txt", "d.txt"] {
            write(&format!("short-text/{name}"), b"tiny text\n");
        }
        std::fs::create_dir(d.join("some-text")).unwrap();
        for name in ["a.txt", "b.txt", "c.txt", "d.txt"] {
            write(
                &format!("some-text/{name}"),
                "Some text. ".repeat(20).as_bytes(),
            );
        }
        std::fs::create_dir(d.join("hidden-only")).unwrap();
        write("hidden-only/.notes", b"not a document");
        std::fs::create_dir(d.join("a-folder")).unwrap();

        // Damaged states.
        let good = std::fs::read(d.join("good.state")).unwrap();
        let state = Parts::read(&good);
        let meta = |key: &str| -> usize { state.metadata[key].parse().unwrap() };
        let (consumed, step_len) = (meta("consumed"), meta("step_len"));
        let mut format1 = b"REMEMSS\0".to_vec();
        format1.extend_from_slice(&1u32.to_le_bytes());
        write("format1.state", &format1);
        write(
            "version.state",
            &state.with(|p| {
                p.metadata.insert("remem.format".into(), "9".into());
            }),
        );
        write("truncated.state", &good[..30]);
        write("empty.state", b"");
        let value = |key: &str| find(&good, format!("\"{key}\":\"").as_bytes()) + key.len() + 4;
        for (name, at) in [
            ("bit-magic", 0),
            ("bit-consumed", value("consumed")),
            ("bit-pending", data_at(&good, "session.pending")),
            ("bit-logits", data_at(&good, "session.logits") + 4),
            ("bit-memory", data_at(&good, "memory") + 8),
            ("bit-checksum", value("remem.checksum")),
        ] {
            write(&format!("{name}.state"), &flipped(&good, at));
        }
        let set = |key: &'static str, value: String| {
            state.with(move |p| {
                p.metadata.insert(key.into(), value);
            })
        };
        write("count.state", &set("consumed", (consumed + 1).to_string()));
        write("no-count.state", &set("consumed", "0".into()));
        write("step.state", &set("step_len", "5".into()));
        let pending = |ids: Vec<u32>| {
            state.with(move |p| {
                let bytes = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
                p.tensors.insert(
                    "session.pending".into(),
                    (Dtype::U32, vec![ids.len()], bytes),
                );
            })
        };
        write("pending-len.state", &pending(vec![0; step_len]));
        write("pending-id.state", &pending(vec![999]));
        let patch = |name: &'static str, value: f32| {
            state.with(move |p| {
                p.tensors.get_mut(name).unwrap().2[4..8].copy_from_slice(&value.to_le_bytes());
            })
        };
        write("nan-logits.state", &patch("session.logits", f32::NAN));
        write(
            "flag.state",
            &state.with(|p| {
                p.tensors.remove("session.logits");
            }),
        );
        write("inf-memory.state", &patch("memory", f32::INFINITY));
        write(
            "id.state",
            &state.with(|p| {
                let id = p.metadata.get_mut("model_id").unwrap();
                id.insert(0, 'X');
            }),
        );
        Fixture { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A config file's cases: the TOML and what the message must name.
const CONFIGS: &[(&str, &str)] = &[
    ("[model]\nd_modle = 64\n", "d_modle"),
    ("[task]\nkind = \"sorting\"\n", "sorting"),
    ("[model]\nd_model = 0\n", "model.d_model"),
    ("[train]\ncarry_windows = 4\n", "train.carry_memory = true"),
    ("[model]\nd_model = -1\n", "d_model"),
    ("[model]\nd_model = \"big\"\n", "d_model"),
    (
        "[model]\nd_model = 4294967296\nn_heads = 1\n",
        "model.d_model",
    ),
    ("[model]\nn_heads = 3\n", "model.n_heads"),
    ("[model]\nn_layers = 0\n", "model.n_layers"),
    ("[model]\nd_ff = 0\n", "model.d_ff"),
    ("[model]\nsegment_len = 0\n", "model.segment_len"),
    ("[model]\nmemory_tokens = 100000\n", "model.memory_tokens"),
    ("[model]\ndropout = 1.5\n", "model.dropout"),
    ("[model]\nvocab_size = 2\n", "model.vocab_size"),
    ("[model]\nvocab_size = 4000000000\n", "model.vocab_size"),
    (
        "[model]\nkind = \"xl\"\nlayout = \"encoder\"\n",
        "model.layout",
    ),
    (
        "[model]\nkind = \"memxl\"\nmemory_tokens = 0\n",
        "model.memory_tokens",
    ),
    (
        "[model]\nkind = \"xl\"\npositions = \"rotary\"\n",
        "model.positions",
    ),
    ("[model]\npositions = \"absolute\"\n", "positions"),
    ("[model]\nstore = \"delta\"\n", "model.store"),
    ("[model]\nkind = \"armt\"\nstore = \"sparse\"\n", "store"),
    ("[train]\nlr = -1.0\n", "train.lr"),
    ("[train]\nlr = 0.0\n", "train.lr"),
    ("[train]\nmin_lr = 1.0\n", "train.min_lr"),
    (
        "[train]\nwarmup_steps = 10\ndecay_steps = 10\n",
        "train.decay_steps",
    ),
    ("[train]\nweight_decay = -1.0\n", "train.weight_decay"),
    ("[train]\ngrad_clip = 0.0\n", "train.grad_clip"),
    ("[train]\nsteps = 0\n", "train.steps"),
    ("[train]\nbatch_size = 0\n", "train.batch_size"),
    ("[train]\nbatch_size = 100000000000\n", "train.batch_size"),
    ("[train]\neval_every = 0\n", "train.eval_every"),
    ("[train]\ntarget_exact = 1.5\n", "train.target_exact"),
    (
        "[train.curriculum]\nstart_segments = 0\n",
        "train.curriculum.start_segments",
    ),
    (
        "[train.curriculum]\nstart_segments = 1\nwindow = 0\n",
        "train.curriculum.window",
    ),
    (
        "[task]\nkind = \"reverse\"\n[model]\nsegment_len = 5\n",
        "task.segments",
    ),
    ("[task]\nsegments = 0\n", "task.segments"),
    ("[task]\nsymbols = 1\n", "task.symbols"),
    ("[task]\nkind = \"associative\"\npairs = 0\n", "task.pairs"),
    ("[task]\nmoves = 3\n", "task.moves"),
    ("[task]\nquestions = 2\n", "task.questions"),
    ("[task]\nlate_facts = 2.0\n", "task.late_facts"),
    ("[task]\nlate_segments = 3\n", "task.late_segments"),
    ("seed = \"x\"\n", "seed"),
    ("[model\n", "cannot read config"),
    ("\u{0}\u{1}\u{2}garbage", "cannot read config"),
];

/// Command-line cases that need no fixture file beyond the trained runs.
fn flag_cases() -> Vec<Case> {
    let train = |flags: &[&str], code: i32, expect: &[&str]| {
        let args = [
            &[
                "train",
                "--device",
                "cpu",
                "--quiet",
                "--run-dir",
                "new-run",
            ][..],
            flags,
        ]
        .concat();
        case(&args, code, expect)
    };
    let mut cases = vec![
        train(
            &["--segment-len", "0"],
            1,
            &["--segment-len", "model.segment_len"],
        ),
        train(&["--segments", "0"], 1, &["--segments", "task.segments"]),
        train(&["--moves", "2"], 1, &["--moves", "task.moves", "qa1"]),
        train(
            &["--questions", "2"],
            1,
            &["--questions", "task.questions", "qa1"],
        ),
        train(
            &["--late-facts", "0.5", "--late-segments", "2"],
            1,
            &["--late-facts", "task.late_facts", "Copy"],
        ),
        train(&["--batch-size", "0"], 1, &["--batch-size"]),
        train(
            &["--batch-size", &u64::MAX.to_string()],
            1,
            &["--batch-size", "GiB"],
        ),
        train(&["--d-model", "0"], 1, &["--d-model"]),
        train(
            &["--d-model", "1048576", "--heads", "1"],
            1,
            &["--d-model", "GiB"],
        ),
        train(&["--heads", "0"], 1, &["--heads"]),
        train(&["--heads", "3"], 1, &["--heads", "model.n_heads"]),
        train(&["--layers", "0"], 1, &["--layers"]),
        train(&["--d-ff", "0"], 1, &["--d-ff"]),
        train(&["--lr=-1"], 1, &["--lr", "train.lr"]),
        train(&["--lr", "0"], 1, &["--lr"]),
        train(&["--lr", "nan"], 1, &["--lr"]),
        train(&["--lr", "inf"], 1, &["--lr"]),
        train(&["--lr", "fast"], 2, &["--lr"]),
        train(&["--min-lr", "1"], 1, &["--min-lr", "train.min_lr"]),
        train(&["--min-lr=-1"], 1, &["--min-lr", "train.min_lr"]),
        train(&["--warmup-steps", "soon"], 2, &["--warmup-steps"]),
        train(&["--steps", "0"], 1, &["--steps", "train.steps"]),
        train(&["--steps", "18446744073709551616"], 2, &["--steps"]),
        train(&["--eval-every", "0"], 1, &["--eval-every"]),
        train(&["--eval-samples", "0"], 1, &["--eval-samples"]),
        train(&["--checkpoint-every", "0"], 1, &["--checkpoint-every"]),
        train(&["--target-exact", "2"], 1, &["--target-exact"]),
        train(&["--target-exact=-0.5"], 1, &["--target-exact"]),
        train(&["--curriculum-from", "0"], 1, &["--curriculum-from"]),
        train(&["--curriculum-from", "9"], 1, &["--curriculum-from"]),
        train(
            &["--curriculum-on", "exact-match"],
            1,
            &["--curriculum-on", "--curriculum-from"],
        ),
        train(&["--curriculum-on", "tokens"], 2, &["tokens"]),
        train(&["--memory-tokens", "100000"], 1, &["--memory-tokens"]),
        train(&["--segment-len", "99999"], 1, &["--segment-len"]),
        train(
            &["--model", "memxl", "--memory-tokens", "0"],
            1,
            &["--memory-tokens"],
        ),
        train(&["--model", "xl", "--layout", "encoder"], 1, &["--layout"]),
        train(
            &["--model", "xl", "--memory-gate"],
            1,
            &["--memory-gate", "model.memory_gate"],
        ),
        train(
            &["--model", "rmt", "--store", "delta"],
            1,
            &["--store", "model.store"],
        ),
        train(
            &["--task", "reverse", "--segment-len", "5"],
            1,
            &["task.segments"],
        ),
        train(
            &["--task", "associative", "--segments", "1"],
            1,
            &["--segments", "pairs"],
        ),
        train(
            &["--model", "infinity", "--ltm-basis", "0"],
            1,
            &["--ltm-basis"],
        ),
        train(&["--task", "nope"], 2, &["nope"]),
        train(&["--model", "nope"], 2, &["nope"]),
        train(&["--layout", "sideways"], 2, &["sideways"]),
        train(&["--ltm-sampling", "nope"], 2, &["nope"]),
        train(&["--carry-memory"], 1, &["--carry-memory", "the text task"]),
        train(
            &["--carry-windows", "0"],
            1,
            &["--carry-windows", "at least 1"],
        ),
        train(&["--bptt-depth", "deep"], 2, &["--bptt-depth"]),
        train(&["--bptt-depth=-1"], 2, &["--bptt-depth"]),
        train(&["--seed", "abc"], 2, &["--seed"]),
        train(&["--seed=-1"], 2, &["--seed"]),
        train(&["--frobnicate"], 2, &["--frobnicate"]),
        train(&["--steps"], 2, &["--steps"]),
        case(&["train", "--device", "tpu"], 2, &["unknown device `tpu`"]),
        case(&["train", "--resume"], 2, &["--run-dir"]),
        case(&["frobnicate"], 2, &["frobnicate"]),
        // Run folders.
        train(&["--run-dir", "run", "--steps", "8"], 2, &["--run-dir"]),
        case(
            &["train", "--device", "cpu", "--quiet", "--run-dir", "run"],
            1,
            &["already holds a checkpoint", "--resume"],
        ),
        case(
            &[
                "train",
                "--device",
                "cpu",
                "--quiet",
                "--steps",
                "1",
                "--run-dir",
                "a-file/run",
            ],
            1,
            &["a-file"],
        ),
        case(
            &[
                "train",
                "--device",
                "cpu",
                "--quiet",
                "--resume",
                "--run-dir",
                "missing-run",
            ],
            1,
            &["nothing to resume"],
        ),
        case(
            &[
                "train",
                "--device",
                "cpu",
                "--quiet",
                "--resume",
                "--run-dir",
                "empty-run",
            ],
            1,
            &["nothing to resume"],
        ),
        case(
            &[
                "train",
                "--device",
                "cpu",
                "--quiet",
                "--resume",
                "--run-dir",
                "corrupt-run",
            ],
            1,
            &["corrupt-run", "checksum"],
        ),
        case(
            &[
                "train",
                "--device",
                "cpu",
                "--quiet",
                "--resume",
                "--run-dir",
                "export-run",
            ],
            1,
            &["no optimiser state"],
        ),
        case(
            &[
                "train",
                "--device",
                "cpu",
                "--quiet",
                "--resume",
                "--run-dir",
                "run",
                "--steps",
                "1",
            ],
            1,
            &["--steps 1 is below"],
        ),
    ];
    for flag in [
        &["--lr", "0.1"][..],
        &["--d-model", "32"],
        &["--model", "xl"],
        &["--batch-size", "8"],
        &["--config", "a-file"],
        &["--seed", "3"],
        &["--segments", "3"],
        &["--bptt-depth", "1"],
        &["--warmup-steps", "10"],
    ] {
        cases.push(case(
            &[
                &[
                    "train",
                    "--device",
                    "cpu",
                    "--quiet",
                    "--resume",
                    "--run-dir",
                    "run",
                ][..],
                flag,
            ]
            .concat(),
            1,
            &[flag[0], "cannot change a run being resumed"],
        ));
    }
    // Config files, written by the test before the cases run.
    for (i, (_, expect)) in CONFIGS.iter().enumerate() {
        let file = format!("config-{i}.toml");
        cases.push(case(
            &[
                "train",
                "--device",
                "cpu",
                "--quiet",
                "--config",
                &file,
                "--run-dir",
                "new-run",
            ],
            1,
            &[expect],
        ));
    }
    cases.push(case(
        &["train", "--device", "cpu", "--config", "missing.toml"],
        1,
        &["missing.toml", "No such file"],
    ));
    cases.push(case(
        &["train", "--device", "cpu", "--config", "a-folder"],
        1,
        &["a-folder"],
    ));

    // Text data.
    let text = |flags: &[&str], code: i32, expect: &[&str]| {
        train(&[flags, &["--steps", "1"][..]].concat(), code, expect)
    };
    cases.extend([
        text(&["--data"], 2, &["--data"]),
        text(&["--data", "missing.txt"], 1, &["missing.txt"]),
        text(
            &["--data", "empty.state"],
            1,
            &["--data", "0 non-empty document"],
        ),
        text(&["--data", "a-folder"], 1, &["a-folder", "holds no file"]),
        text(
            &["--data", "hidden-only"],
            1,
            &["hidden-only", "holds no file"],
        ),
        text(&["--data", "a-file"], 1, &["--data", "at least 3"]),
        text(
            &["--data", "short-text"],
            1,
            &["--data", "longer than every training document"],
        ),
        text(
            &["--data", "some-text", "--task", "copy"],
            1,
            &["--data", "--task text"],
        ),
        text(
            &["--data", "some-text", "--layout", "encoder"],
            1,
            &["--layout"],
        ),
        text(&["--task", "text"], 1, &["task.data", "--data PATH"]),
        text(&["--task", "memorize"], 1, &["task.data", "book text"]),
        text(
            &[
                "--task",
                "qa2",
                "--data",
                "some-text",
                "--segments",
                "2",
                "--segment-len",
                "8",
            ],
            1,
            &["--segments", "story needs"],
        ),
        case(
            &[
                "eval",
                "--device",
                "cpu",
                "--checkpoint",
                "run",
                "--data",
                "short-text",
            ],
            1,
            &["--data", "reads no text"],
        ),
    ]);

    // Checkpoints, through every command that reads one.
    let damaged = [
        ("corrupt.safetensors", "checksum"),
        ("truncated.safetensors", "truncated"),
        ("empty.safetensors", "checkpoint"),
        ("text.safetensors", "not a safetensors file"),
        ("foreign.safetensors", "not written by remem"),
        ("legacy.remem", "earlier remem build"),
        ("version.safetensors", "format 77"),
        ("missing.safetensors", "No such file"),
        ("empty-run", "No such file"),
        ("good.state", "not a checkpoint file"),
        ("mismatch.safetensors", "weights do not fit the model"),
    ];
    for (file, expect) in damaged {
        cases.push(case(
            &["eval", "--device", "cpu", "--checkpoint", file],
            1,
            &[file, expect],
        ));
        cases.push(case(
            &[
                "stream",
                "--device",
                "cpu",
                "--checkpoint",
                file,
                "--text",
                "0",
            ],
            1,
            &[file, expect],
        ));
        // `export` converts a checkpoint of an earlier build (tests/cli.rs checks it).
        if file != "legacy.remem" {
            cases.push(case(
                &["export", "--checkpoint", file, "--out", "out.safetensors"],
                1,
                &[file, expect],
            ));
        }
    }
    for run in [&["--resume"][..], TINY] {
        cases.push(case(
            &[&["train", "--run-dir", "legacy-run"], run].concat(),
            1,
            &["legacy-run", "earlier remem build"],
        ));
    }
    cases.extend([
        case(
            &[
                "eval",
                "--device",
                "cpu",
                "--checkpoint",
                "run",
                "--segments",
                "0",
            ],
            1,
            &["--segments 0"],
        ),
        case(
            &[
                "eval",
                "--device",
                "cpu",
                "--checkpoint",
                "run",
                "--segments",
                "999999999",
            ],
            1,
            &["--segments 999999999", "GiB"],
        ),
        case(
            &[
                "eval",
                "--device",
                "cpu",
                "--checkpoint",
                "run",
                "--samples",
                "0",
            ],
            1,
            &["--samples"],
        ),
        case(
            &[
                "eval",
                "--device",
                "cpu",
                "--checkpoint",
                "run",
                "--samples",
                "many",
            ],
            2,
            &["--samples"],
        ),
        case(
            &["eval", "--device", "tpu", "--checkpoint", "run"],
            2,
            &["tpu"],
        ),
        case(&["eval", "--device", "cpu"], 2, &["--checkpoint"]),
        // The memory controls read text documents; this run learnt copy.
        case(
            &[
                "eval",
                "--device",
                "cpu",
                "--checkpoint",
                "run",
                "--foreign-memory",
            ],
            1,
            &["--foreign-memory", "text"],
        ),
        case(
            &[
                "eval",
                "--checkpoint",
                "run",
                "--reset-memory",
                "--foreign-memory",
            ],
            2,
            &["--reset-memory", "--foreign-memory"],
        ),
        case(
            &[
                "export",
                "--checkpoint",
                "run",
                "--out",
                "run/checkpoint.safetensors",
            ],
            1,
            &["--out", "could no longer resume"],
        ),
        case(
            &[
                "export",
                "--checkpoint",
                "export.safetensors",
                "--out",
                "xl/checkpoint.safetensors",
            ],
            1,
            &["--out", "could no longer resume"],
        ),
        case(
            &[
                "export",
                "--checkpoint",
                "run",
                "--out",
                "missing-folder/out.safetensors",
            ],
            1,
            &["missing-folder"],
        ),
    ]);

    // Stream inputs and flags.
    let stream = |flags: &[&str], code: i32, expect: &[&str]| {
        case(
            &[
                &[
                    "stream",
                    "--device",
                    "cpu",
                    "--quiet",
                    "--checkpoint",
                    "run",
                ][..],
                flags,
            ]
            .concat(),
            code,
            expect,
        )
    };
    cases.extend([
        stream(&["--text", "01a3"], 1, &["character 'a' at byte 2"]),
        stream(&["--text", ""], 1, &["the input is empty"]),
        stream(&["--input", "empty.state"], 1, &["the input is empty"]),
        stream(&["--input", "missing.txt"], 1, &["missing.txt"]),
        stream(&["--input", "a-folder"], 1, &["a-folder"]),
        stream(&["--input", "a-file", "--text", "0"], 2, &["--text"]),
        stream(&["--temperature=-1", "--text", "0"], 1, &["--temperature"]),
        stream(
            &["--temperature", "nan", "--text", "0"],
            1,
            &["--temperature"],
        ),
        stream(
            &["--temperature", "inf", "--text", "0"],
            1,
            &["--temperature"],
        ),
        stream(&["--top-k", "0", "--text", "0"], 1, &["--top-k"]),
        stream(&["--generate=-1", "--text", "0"], 2, &["--generate"]),
        stream(&["--generate", "lots", "--text", "0"], 2, &["--generate"]),
        stream(
            &["--generate", "18446744073709551616", "--text", "0"],
            2,
            &["--generate"],
        ),
        stream(
            &["--text", "0", "--save-state", "a-folder"],
            1,
            &["--save-state", "folder"],
        ),
        stream(
            &["--text", "0", "--save-state", "run/checkpoint.safetensors"],
            1,
            &["--save-state", "checkpoint"],
        ),
        stream(
            &["--text", "0", "--save-state", "missing-folder/s.state"],
            1,
            &["--save-state", "missing-folder"],
        ),
    ]);
    let mut piped = stream(&[], 1, &["byte 1"]);
    piped.stdin = Some(b"0\xff1".to_vec());
    cases.push(piped);
    let mut piped = stream(&[], 1, &["the input is empty"]);
    piped.stdin = Some(Vec::new());
    cases.push(piped);

    // Saved states.
    for (file, expect) in [
        ("format1.state", "earlier remem build"),
        ("version.state", "format 9"),
        ("truncated.state", "truncated"),
        ("empty.state", "not a safetensors file"),
        ("bit-magic.state", "not a safetensors file"),
        ("bit-consumed.state", "checksum"),
        ("bit-pending.state", "checksum"),
        ("bit-logits.state", "checksum"),
        ("bit-memory.state", "checksum"),
        ("bit-checksum.state", "checksum"),
        ("count.state", "not a multiple"),
        ("no-count.state", "damaged"),
        ("step.state", "tokens per step"),
        ("pending-len.state", "tokens per step"),
        ("pending-id.state", "999"),
        ("nan-logits.state", "NaN"),
        ("flag.state", "damaged"),
        ("inf-memory.state", "inf"),
        ("id.state", "state belongs to model"),
        ("xl.state", "state belongs to model"),
        ("missing.state", "No such file"),
        ("a-folder", "a-folder"),
        ("run/checkpoint.safetensors", "not a session file"),
    ] {
        cases.push(stream(&["--text", "1", "--load-state", file], 1, &[expect]));
    }

    // Bench and compare.
    cases.extend([
        case(
            &["bench", "--device", "cpu", "--stream-tokens", "0"],
            1,
            &["--stream-tokens"],
        ),
        case(
            &["bench", "--device", "cpu", "--train-steps", "0"],
            1,
            &["--train-steps"],
        ),
        case(
            &["bench", "--device", "cpu", "--json", "a-folder"],
            1,
            &["--json", "a-folder"],
        ),
        case(
            &["bench", "--device", "cpu", "--json", "a-file/b.json"],
            1,
            &["--json", "a-file"],
        ),
        case(
            &["bench", "--device", "cpu", "--train-models", "foo"],
            2,
            &["foo"],
        ),
        case(
            &["bench", "--device", "cpu", "--stream-tokens", "many"],
            2,
            &["--stream-tokens"],
        ),
        case(
            &[
                "compare",
                "--device",
                "cpu",
                "--task",
                "copy",
                "--segments",
                "0",
                "--out",
                "c",
            ],
            1,
            &["0 equal segments"],
        ),
        case(
            &[
                "compare", "--device", "cpu", "--task", "copy", "--seeds", "0", "--out", "c",
            ],
            1,
            &["--seeds"],
        ),
        case(
            &[
                "compare", "--device", "cpu", "--task", "copy", "--jobs", "0", "--out", "c",
            ],
            1,
            &["--jobs"],
        ),
        case(
            &["compare", "--device", "cpu", "--task", "nope"],
            2,
            &["nope"],
        ),
        case(
            &[
                "compare", "--device", "cpu", "--task", "copy", "--models", "foo",
            ],
            2,
            &["foo"],
        ),
        case(
            &[
                "compare",
                "--device",
                "cpu",
                "--task",
                "copy",
                "--length",
                "25",
                "--segments",
                "3",
                "--out",
                "c",
            ],
            1,
            &["--length 25"],
        ),
        case(
            &[
                "compare",
                "--device",
                "cpu",
                "--task",
                "copy",
                "--config",
                "missing.toml",
                "--out",
                "c",
            ],
            1,
            &["missing.toml"],
        ),
    ]);
    cases
}

/// Every case fails as it should and leaves the fixture untouched.
#[test]
fn bad_input_fails_clearly_and_changes_nothing() {
    let fixture = Fixture::new();
    let d = fixture.path();
    for (i, (toml, _)) in CONFIGS.iter().enumerate() {
        std::fs::write(d.join(format!("config-{i}.toml")), toml).unwrap();
    }
    let cases = flag_cases();
    assert!(cases.len() >= 100, "{} cases", cases.len());
    let before = snapshot(d);
    let mut failures = Vec::new();
    for case in &cases {
        if let Some(problem) = check(d, case) {
            failures.push(problem);
        }
        let after = snapshot(d);
        if after != before {
            let changed: Vec<_> = after
                .keys()
                .chain(before.keys())
                .filter(|k| after.get(*k) != before.get(*k))
                .collect();
            panic!("{} changed {changed:?}", case.args.join(" "));
        }
    }
    // A folder another process is training in: this process holds its lock.
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .open(d.join("run/.lock"))
        .unwrap();
    lock.try_lock().unwrap();
    for args in [
        &[
            "train",
            "--device",
            "cpu",
            "--quiet",
            "--resume",
            "--run-dir",
            "run",
        ][..],
        &["train", "--device", "cpu", "--quiet", "--run-dir", "run"],
    ] {
        if let Some(problem) = check(d, &case(args, 1, &["is in use by another remem process"])) {
            failures.push(problem);
        }
    }
    drop(lock);
    // Output to a full device: an error saying so, not a panic.
    #[cfg(target_os = "linux")]
    {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = bin()
            .current_dir(d)
            .args([
                "stream",
                "--device",
                "cpu",
                "--quiet",
                "--checkpoint",
                "run",
            ])
            .args(["--text", "0123", "--generate", "5"])
            .stdout(full)
            .output()
            .unwrap();
        let err = stderr(&out);
        if out.status.code() != Some(1)
            || !err.contains("No space left on device")
            || err.contains("panicked")
        {
            failures.push(format!("output to /dev/full: {:?} {err}", out.status));
        }
    }
    assert_eq!(snapshot(d), before, "a locked-folder case changed a file");
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len() + 2,
        failures.join("\n")
    );
}

/// The library's public calls refuse bad input with an error, never a panic.
#[test]
fn the_library_refuses_bad_input_with_errors() {
    use remem::infer::Session;
    use remem::train::{Checkpoint, RunConfig};

    let fixture = Fixture::new();
    let d = fixture.path();
    let device = burn::tensor::Device::flex();
    let ck = std::fs::read(d.join("run/checkpoint.safetensors")).unwrap();
    let mut session = Session::from_checkpoint_bytes(&ck, "run", &device).unwrap();
    let err = |r: Result<(), remem::Error>| r.unwrap_err().to_string();

    let mut messages = vec![
        (
            err(RunConfig::from_toml("[model\n")
                .map(|_| ())
                .map_err(remem::Error::Input)),
            "model",
        ),
        (
            err(Checkpoint::from_bytes(b"garbage", Path::new("g")).map(|_| ())),
            "not a safetensors file",
        ),
        (
            err(Checkpoint::from_bytes(&ck[..ck.len() - 1], Path::new("t")).map(|_| ())),
            "truncated",
        ),
        (
            err(Session::from_checkpoint_bytes(b"", "empty", &device).map(|_| ())),
            "empty",
        ),
        (
            err(Session::from_checkpoint_bytes(
                &std::fs::read(d.join("corrupt.safetensors")).unwrap(),
                "c",
                &device,
            )
            .map(|_| ())),
            "checksum",
        ),
        (
            err(session.next_logits().map(|_| ())),
            "nothing has been read",
        ),
        (err(session.predict().map(|_| ())), "nothing has been read"),
        (err(session.feed(&[999])), "999"),
        (err(session.feed(&[u32::MAX])), "4294967295"),
        (err(session.load(b"")), "not a safetensors file"),
        (
            err(session.load(&std::fs::read(d.join("xl.state")).unwrap())),
            "state belongs to model",
        ),
        (
            err(session.load(&std::fs::read(d.join("inf-memory.state")).unwrap())),
            "inf",
        ),
        (
            err(session.load_file(&d.join("missing.state"))),
            "missing.state",
        ),
        (err(session.save_file(&d.join("a-folder"))), "a-folder"),
    ];
    let mut config = RunConfig::default();
    config.model.n_heads = 3;
    messages.push((err(config.resolve().map(|_| ())), "model.n_heads"));
    for (message, expect) in &messages {
        assert!(
            message.contains(expect),
            "expected `{expect}` in: {message}"
        );
    }
    // The session is unharmed by the refused calls: it still reads and predicts.
    session.feed(&[0, 1, 2, 3]).unwrap();
    session.predict().unwrap();
}

/// A training killed with SIGKILL at several moments and resumed each time ends with exactly
/// the metrics of a run never interrupted.
#[test]
fn a_killed_training_resumes_to_the_same_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |name: &str, resume: bool| {
        let mut cmd = bin();
        cmd.current_dir(d).arg("train").args(TINY).args([
            "--steps",
            "1500",
            "--checkpoint-every",
            "7",
            "--run-dir",
            name,
        ]);
        if resume {
            // The settings come from the run folder; only the device and quiet are repeated.
            cmd = bin();
            cmd.current_dir(d).args([
                "train",
                "--device",
                "cpu",
                "--quiet",
                "--resume",
                "--run-dir",
                name,
            ]);
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        cmd
    };
    let out = run("whole", false).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    let mut killed_mid_run = 0;
    for delay_ms in [120, 40, 300, 75, 500, 10] {
        let resume = d.join("killed/config.toml").exists();
        let mut child = run("killed", resume).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        if child.try_wait().unwrap().is_none() {
            killed_mid_run += 1;
        }
        child.kill().unwrap(); // SIGKILL
        let out = child.wait_with_output().unwrap();
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    }
    assert!(
        killed_mid_run >= 4,
        "only {killed_mid_run} kills landed mid-run"
    );
    let out = run("killed", d.join("killed/config.toml").exists())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    // Every record but the timings.
    let records = |name: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(d.join(name).join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("tokens_per_s");
                v
            })
            .collect()
    };
    let (whole, killed) = (records("whole"), records("killed"));
    assert!(whole.len() > 1500, "{} records", whole.len());
    assert_eq!(whole.len(), killed.len(), "record counts differ");
    for (a, b) in whole.iter().zip(&killed) {
        assert_eq!(a, b);
    }
}
