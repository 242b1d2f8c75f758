//! The bad-input suite: well over a hundred wrong configs, flags, checkpoints, saved states,
//! stream inputs, run folders and library calls. Each command case asserts the exit code (1
//! for remem's own errors, 2 for command-line usage errors), that the message names the
//! culprit, that nothing panicked, and that no file of the fixture changed and none appeared.
//! A second test kills a short training with SIGKILL several times and checks that the resumed
//! run's metrics equal an uninterrupted run's.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use remem::train::checkpoint::fnv1a;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_remem"))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A tiny copy run's flags, quick enough to train in a fraction of a second.
const TINY: &[&str] = &[
    "--device",
    "cpu",
    "--quiet",
    "--segments",
    "2",
    "--segment-len",
    "3",
    "--d-model",
    "16",
    "--layers",
    "1",
    "--heads",
    "2",
    "--d-ff",
    "32",
    "--memory-tokens",
    "2",
    "--batch-size",
    "4",
    "--eval-every",
    "4",
    "--eval-samples",
    "8",
];

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

/// `body` followed by its FNV-1a checksum: a damaged file that passes the checksum, so the
/// checks behind it are what must catch it.
fn reseal(body: &[u8]) -> Vec<u8> {
    let mut out = body.to_vec();
    out.extend_from_slice(&fnv1a(body).to_le_bytes());
    out
}

/// A saved session state's fields, located in its bytes (see `src/infer/saved.rs`).
struct StateLayout {
    bytes: Vec<u8>,
    consumed: usize,
    step_len: usize,
    pending_len: usize,
    pending: usize,
    logits_flag: usize,
    logits: usize,
}

impl StateLayout {
    fn read(bytes: Vec<u8>) -> Self {
        let id_len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
        let consumed = 16 + id_len;
        let pending_len = consumed + 12;
        let n = u32::from_le_bytes(bytes[pending_len..pending_len + 4].try_into().unwrap());
        let pending = pending_len + 4;
        let logits_flag = pending + 4 * n as usize;
        assert_eq!(bytes[logits_flag], 1, "the fixture's state has logits");
        StateLayout {
            consumed,
            step_len: consumed + 8,
            pending_len,
            pending,
            logits_flag,
            logits: logits_flag + 5,
            bytes,
        }
    }

    /// The body (without the checksum) with `patch` applied at `at`, resealed.
    fn patched(&self, at: usize, patch: &[u8]) -> Vec<u8> {
        let mut body = self.bytes[..self.bytes.len() - 8].to_vec();
        body[at..at + patch.len()].copy_from_slice(patch);
        reseal(&body)
    }

    /// The bytes with one bit flipped at `at`, not resealed.
    fn flipped(&self, at: usize) -> Vec<u8> {
        let mut bytes = self.bytes.clone();
        bytes[at] ^= 0x10;
        bytes
    }
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
        ok(&["export", "--checkpoint", "run", "--out", "export.remem"]);
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
        let ck = std::fs::read(d.join("run/checkpoint.remem")).unwrap();
        let mut corrupt = ck.clone();
        corrupt[ck.len() / 2] ^= 0xff;
        write("corrupt.remem", &corrupt);
        write("truncated.remem", &ck[..ck.len() / 3]);
        write("empty.remem", b"");
        write("text.remem", b"hello, I am not a checkpoint\n");
        let mut version = ck[..ck.len() - 8].to_vec();
        version[8..12].copy_from_slice(&77u32.to_le_bytes());
        write("version.remem", &reseal(&version));
        std::fs::create_dir(d.join("empty-run")).unwrap();
        std::fs::create_dir(d.join("corrupt-run")).unwrap();
        write("corrupt-run/checkpoint.remem", &corrupt);
        write(
            "corrupt-run/config.toml",
            &std::fs::read(d.join("run/config.toml")).unwrap(),
        );
        std::fs::create_dir(d.join("export-run")).unwrap();
        write(
            "export-run/checkpoint.remem",
            &std::fs::read(d.join("export.remem")).unwrap(),
        );
        write("a-file", b"x");
        // A checkpoint whose weights belong to another model (the Transformer-XL run's).
        let run = remem::train::Checkpoint::load(&d.join("run/checkpoint.remem")).unwrap();
        let xl = remem::train::Checkpoint::load(&d.join("xl/checkpoint.remem")).unwrap();
        remem::train::Checkpoint {
            model: xl.model,
            ..run
        }
        .save(&d.join("mismatch.remem"))
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
        let state = StateLayout::read(std::fs::read(d.join("good.state")).unwrap());
        let len = state.bytes.len();
        let mut format1 = state.bytes.clone();
        format1[8..12].copy_from_slice(&1u32.to_le_bytes());
        write("format1.state", &format1);
        write("version.state", &state.patched(8, &9u32.to_le_bytes()));
        write("truncated.state", &state.bytes[..30]);
        write("empty.state", b"");
        for (name, at) in [
            ("bit-magic", 0),
            ("bit-consumed", state.consumed),
            ("bit-pending", state.pending),
            ("bit-logits", state.logits + 4),
            ("bit-memory", len - 20),
            ("bit-checksum", len - 1),
        ] {
            write(&format!("{name}.state"), &state.flipped(at));
        }
        let consumed = u64::from_le_bytes(
            state.bytes[state.consumed..state.consumed + 8]
                .try_into()
                .unwrap(),
        );
        write(
            "count.state",
            &state.patched(state.consumed, &(consumed + 1).to_le_bytes()),
        );
        write(
            "no-count.state",
            &state.patched(state.consumed, &0u64.to_le_bytes()),
        );
        write(
            "step.state",
            &state.patched(state.step_len, &5u32.to_le_bytes()),
        );
        write(
            "pending-len.state",
            &state.patched(state.pending_len, &3u32.to_le_bytes()),
        );
        write(
            "pending-id.state",
            &state.patched(state.pending, &999u32.to_le_bytes()),
        );
        write(
            "nan-logits.state",
            &state.patched(state.logits + 8, &f32::NAN.to_le_bytes()),
        );
        write("flag.state", &state.patched(state.logits_flag, &[0]));
        write(
            "inf-memory.state",
            &state.patched(len - 12, &f32::INFINITY.to_le_bytes()),
        );
        write("id.state", &state.patched(16, b"X"));
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
    ("[train]\nlr = -1.0\n", "train.lr"),
    ("[train]\nlr = 0.0\n", "train.lr"),
    ("[train]\nmin_lr = 1.0\n", "train.min_lr"),
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
        train(&["--steps", "0"], 1, &["--steps", "train.steps"]),
        train(&["--steps", "18446744073709551616"], 2, &["--steps"]),
        train(&["--eval-every", "0"], 1, &["--eval-every"]),
        train(&["--eval-samples", "0"], 1, &["--eval-samples"]),
        train(&["--checkpoint-every", "0"], 1, &["--checkpoint-every"]),
        train(&["--target-exact", "2"], 1, &["--target-exact"]),
        train(&["--target-exact=-0.5"], 1, &["--target-exact"]),
        train(&["--curriculum-from", "0"], 1, &["--curriculum-from"]),
        train(&["--curriculum-from", "9"], 1, &["--curriculum-from"]),
        train(&["--memory-tokens", "100000"], 1, &["--memory-tokens"]),
        train(&["--segment-len", "99999"], 1, &["--segment-len"]),
        train(
            &["--model", "memxl", "--memory-tokens", "0"],
            1,
            &["--memory-tokens"],
        ),
        train(&["--model", "xl", "--layout", "encoder"], 1, &["--layout"]),
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
        ("corrupt.remem", "checksum"),
        ("truncated.remem", "truncated"),
        ("empty.remem", "checkpoint"),
        ("text.remem", "not a remem checkpoint"),
        ("version.remem", "format 77"),
        ("missing.remem", "No such file"),
        ("empty-run", "No such file"),
        ("good.state", "not a remem checkpoint"),
        ("mismatch.remem", "weights do not fit the model"),
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
        cases.push(case(
            &["export", "--checkpoint", file, "--out", "out.remem"],
            1,
            &[file, expect],
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
        case(
            &[
                "export",
                "--checkpoint",
                "run",
                "--out",
                "run/checkpoint.remem",
            ],
            1,
            &["--out", "could no longer resume"],
        ),
        case(
            &[
                "export",
                "--checkpoint",
                "export.remem",
                "--out",
                "xl/checkpoint.remem",
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
                "missing-folder/out.remem",
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
            &["--text", "0", "--save-state", "run/checkpoint.remem"],
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
        ("format1.state", "format 1"),
        ("version.state", "format 9"),
        ("truncated.state", "truncated"),
        ("empty.state", "bad magic"),
        ("bit-magic.state", "bad magic"),
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
        ("run/checkpoint.remem", "bad magic"),
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
    let ck = std::fs::read(d.join("run/checkpoint.remem")).unwrap();
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
            "not a remem checkpoint",
        ),
        (
            err(Checkpoint::from_bytes(&ck[..ck.len() - 1], Path::new("t")).map(|_| ())),
            "checksum",
        ),
        (
            err(Session::from_checkpoint_bytes(b"", "empty", &device).map(|_| ())),
            "empty",
        ),
        (
            err(Session::from_checkpoint_bytes(
                &std::fs::read(d.join("corrupt.remem")).unwrap(),
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
        (err(session.load(b"")), "bad magic"),
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
