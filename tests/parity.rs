//! Backend parity: the same weights give the same outputs and gradients on flex and wgpu.

mod common;

use burn::data::dataloader::batcher::Batcher;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::store::ModuleRecord;
use remem::SegmentModel;
use remem::model::{Layout, Model, ModelConfig, ModelKind};
use remem::nn::LtmSampling;
use remem::task::batch::Rows;
use remem::task::{Batch, SegmentBatcher, Task, TaskConfig, TaskDataset};
use remem::train::loss::{forward_batch, forward_batch_counting_rows};

fn config(kind: ModelKind, layout: Layout) -> ModelConfig {
    ModelConfig {
        kind,
        layout,
        mem_len: Some(3),
        vocab_size: 12,
        d_model: 32,
        n_layers: 2,
        n_heads: 4,
        d_ff: 64,
        memory_tokens: 3,
        segment_len: 4,
        ..ModelConfig::default()
    }
}

/// The same weights on another device.
fn copy_to(model: &Model, device: &Device) -> Model {
    let bytes = model.clone().into_record().into_bytes().unwrap();
    Model::new(model.config(), 0, device).load_record(ModuleRecord::from_bytes(bytes).unwrap())
}

struct Grads<'a>(&'a GradientsParams, Vec<Vec<f32>>);
impl ModuleVisitor for Grads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let g = self
            .0
            .get::<D>(param.id)
            .expect("every parameter gets a gradient");
        self.1.push(common::values(g));
    }
}

/// Loss, logits of every segment, final memory, and every parameter's gradient.
fn run(model: &Model, device: &Device) -> (Vec<f32>, Vec<Vec<f32>>) {
    let cfg = model.config().clone();
    let task = Task::new(TaskConfig::default(), cfg.segment_len).unwrap();
    let data = TaskDataset::new(task.clone(), 3, 4);
    let items = (0..4).map(|i| data.sample(i)).collect();
    let batch = SegmentBatcher::new(cfg.layout, task.input_len()).batch(items, device);

    // Forward outputs: logits per segment and the final memory, on the plain device.
    let plain = model.valid();
    let mut state = plain.init_state(4, &device.clone().inner());
    let mut outputs = Vec::new();
    let inputs = batch.inputs.clone().inner();
    for start in (0..task.input_len()).step_by(cfg.segment_len) {
        let tokens = inputs.clone().slice(s![.., start..start + cfg.segment_len]);
        let (out, next) = plain.step(tokens, state, true);
        outputs.extend(common::values(out.logits));
        for w in out.attention.unwrap() {
            outputs.extend(common::values(w));
        }
        state = next;
    }
    outputs.extend(common::state_values(&state));

    let out = forward_batch(model, &batch, cfg.segment_len);
    outputs.extend(common::values(out.loss.clone().inner()));
    let grads = GradientsParams::from_grads(out.loss.backward(), model);
    let mut visitor = Grads(&grads, Vec::new());
    model.visit(&mut visitor);
    (outputs, visitor.1)
}

fn parity(kind: ModelKind, layout: Layout) {
    parity_of(config(kind, layout));
}

fn parity_of(config: ModelConfig) {
    let Some(gpu) = common::wgpu_device().map(Device::autodiff) else {
        return;
    };
    let _shared = gpu_shared();
    let cpu = Device::flex().autodiff();
    let model_cpu = Model::new(&config, 11, &cpu);
    let model_gpu = copy_to(&model_cpu, &gpu);

    let (out_cpu, grads_cpu) = run(&model_cpu, &cpu);
    let (out_gpu, grads_gpu) = run(&model_gpu, &gpu);
    let diff = common::max_abs_diff(&out_cpu, &out_gpu);
    assert!(diff < 1e-4, "forward outputs differ by {diff}");
    assert_eq!(grads_cpu.len(), grads_gpu.len());
    for (i, (a, b)) in grads_cpu.iter().zip(&grads_gpu).enumerate() {
        let scale = a.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let diff = common::max_abs_diff(a, b);
        assert!(
            diff <= 1e-4 * scale,
            "gradient of parameter {i} differs by {diff} (scale {scale})"
        );
    }
}

#[test]
fn rmt_decoder_forward_and_gradients_agree_on_flex_and_wgpu() {
    parity(ModelKind::Rmt, Layout::Decoder);
}

#[test]
fn rmt_encoder_forward_and_gradients_agree_on_flex_and_wgpu() {
    parity(ModelKind::Rmt, Layout::Encoder);
}

/// On wgpu Transformer-XL trains all its segments at once (its cache carries no gradient); the
/// CPU runs them one after another.
#[test]
fn rmt_with_a_memory_gate_agrees_on_flex_and_wgpu() {
    parity_of(ModelConfig {
        memory_gate: true,
        ..config(ModelKind::Rmt, Layout::Decoder)
    });
}

#[test]
fn xl_forward_and_gradients_agree_on_flex_and_wgpu() {
    parity(ModelKind::Xl, Layout::Decoder);
}

#[test]
fn memxl_forward_and_gradients_agree_on_flex_and_wgpu() {
    // Covers the cache and the rotary positions as well as memory tokens.
    parity(ModelKind::Memxl, Layout::Decoder);
}

/// ARMT: the associative stores' reads and delta-rule writes, every parameter's gradient
/// through them, with learned and with rotary positions, under both store rules. On wgpu each
/// read and write in training is one operation with its WGSL backward (`ops::store_read`,
/// `ops::store_write`), and so are each segment's layout embedding (`ops::embed`) and each
/// write's scaling of its rows (`ops::unit_rms`): they must be what ran.
#[test]
fn armt_forward_and_gradients_agree_on_flex_and_wgpu() {
    parity(ModelKind::Armt, Layout::Decoder);
    parity_of(ModelConfig {
        positions: remem::model::Positions::Rotary,
        ..config(ModelKind::Armt, Layout::Decoder)
    });
    parity_of(ModelConfig {
        store: remem::nn::StoreRule::Delta,
        ..config(ModelKind::Armt, Layout::Decoder)
    });

    let Some(gpu) = common::wgpu_device().map(Device::autodiff) else {
        return;
    };
    let _alone = gpu_alone();
    let model = Model::new(&config(ModelKind::Armt, Layout::Decoder), 11, &gpu);
    let counts = launched(|| {
        run(&model, &gpu);
    });
    let backward = [
        "remem::store_read_backward",
        "remem::store_read_store_backward",
        "remem::store_write_backward",
        "remem::embed",
        "remem::embed_backward",
        "remem::unit_rms_backward",
    ]
    .map(|k| counts.get(k).copied().unwrap_or(0));
    assert!(
        backward[0] > 0
            && backward[0] == backward[1]
            && backward[2] > 0
            && backward[3] > 0
            && backward[4] > 0
            && backward[5] == backward[2]
            && remem::ops::fallbacks().is_empty(),
        "the store's, the layout embedding's or the rows' scaling's backward kernels did not \
         run ({counts:?}; \
         fallbacks {:?})",
        remem::ops::fallbacks()
    );
}

#[test]
fn infinity_former_forward_and_gradients_agree_on_flex_and_wgpu() {
    // The long-term memory's read, sticky sampling, the gate before the fit and the KL term:
    // every parameter must get a gradient, and the same one on both backends.
    let mut c = config(ModelKind::Infinity, Layout::Decoder);
    c.ltm.basis = 16;
    c.ltm.samples = 12;
    c.ltm.sampling = LtmSampling::Sticky;
    c.ltm.gate = true;
    c.ltm.kl_weight = 1e-2;
    parity_of(c);
}

/// With uniform sampling and no KL term the infinity-former's state carries no gradient, so
/// on wgpu training reads all segments at once (`Xl::window_rows`, the fits one after another
/// first), each memory read one operation with its WGSL backward (`ops::ltm_read`); the CPU
/// runs the segment loop with Burn's operations. The read's backward kernel must be what ran.
#[test]
fn infinity_former_with_uniform_sampling_agrees_on_flex_and_wgpu() {
    let mut c = config(ModelKind::Infinity, Layout::Decoder);
    c.ltm.basis = 16;
    c.ltm.samples = 12;
    c.ltm.gate = true;
    parity_of(c.clone());

    let Some(gpu) = common::wgpu_device().map(Device::autodiff) else {
        return;
    };
    let _alone = gpu_alone();
    let model = Model::new(&c, 11, &gpu);
    let counts = launched(|| {
        run(&model, &gpu);
    });
    let backward = counts.get("remem::ltm_read_backward").copied().unwrap_or(0);
    assert!(
        backward > 0 && remem::ops::fallbacks().is_empty(),
        "the read's backward kernel did not run ({counts:?}; fallbacks {:?})",
        remem::ops::fallbacks()
    );
}

/// Logits of every segment and the final state, stepping without autodiff.
fn inference(model: &Model, device: &Device, return_attention: bool) -> Vec<f32> {
    let cfg = model.config();
    let (batch, seg) = (2, cfg.segment_len);
    let ids: Vec<i64> = (0..batch * 5 * seg)
        .map(|i| (i * 7 % cfg.vocab_size) as i64)
        .collect();
    let all = Tensor::<2, Int>::from_data(TensorData::new(ids, [batch, 5 * seg]), device);
    let mut state = model.init_state(batch, device);
    let mut outputs = Vec::new();
    // Four full segments and a short last one (the mask then has fewer segment rows).
    for (start, end) in [
        (0, seg),
        (seg, 2 * seg),
        (2 * seg, 3 * seg),
        (3 * seg, 4 * seg),
    ]
    .into_iter()
    .chain([(4 * seg, 4 * seg + seg / 2)])
    {
        let tokens = all.clone().slice(s![.., start..end]);
        let (out, next) = model.step(tokens, state, return_attention);
        outputs.extend(common::values(out.logits));
        state = next;
    }
    outputs.extend(common::state_values(&state));
    outputs
}

/// Inference runs attention differently from training: the projections that read the same rows
/// as one product (on wgpu with the block's layer norm inside), and on GPUs one attention
/// kernel (RMT's packed one; over the cache or with rotary positions `kv_attention`) instead
/// of the materialised softmax. Stepping without autodiff must give what the training-time
/// forward gives.
fn inference_matches_training_forward(device: &Device) {
    let training = device.clone().autodiff();
    let rotary = ModelConfig {
        positions: remem::model::Positions::Rotary,
        ..config(ModelKind::Rmt, Layout::Decoder)
    };
    for config in [
        config(ModelKind::Rmt, Layout::Decoder),
        config(ModelKind::Rmt, Layout::Encoder),
        rotary,
        config(ModelKind::Memxl, Layout::Decoder),
        config(ModelKind::Infinity, Layout::Decoder),
        config(ModelKind::Armt, Layout::Decoder),
    ] {
        let model = Model::new(&config, 5, &training);
        let trained_path = inference(&model, &training, false);
        let inference_path = inference(&model.valid(), device, false);
        let diff = common::max_abs_diff(&inference_path, &trained_path);
        let (kind, layout, positions) = (config.kind, config.layout, config.positions);
        assert!(
            diff < 1e-5,
            "{kind:?} {layout:?} {positions:?}: inference differs from the training forward by {diff}"
        );
    }
}

#[test]
fn inference_attention_matches_the_training_forward_on_flex() {
    inference_matches_training_forward(&Device::flex());
}

#[test]
fn inference_attention_matches_the_training_forward_on_wgpu() {
    if let Some(gpu) = common::wgpu_device() {
        let _shared = gpu_shared();
        inference_matches_training_forward(&gpu);
    }
}

/// The packed self-attention the CPU runs with its own kernels: GPUs run the same formulas
/// from Burn's operations, and both give the same context and the same packed gradient. The
/// causal mask is long enough that the CPU's products skip the keys blocks of rows cannot see.
#[test]
fn fused_attention_and_its_gradient_agree_on_flex_and_wgpu() {
    let Some(gpu) = common::wgpu_device().map(Device::autodiff) else {
        return;
    };
    let _shared = gpu_shared();
    let (batch, seq, width) = (2, 160, 24);
    let xs: Vec<f32> = (0..batch * seq * width)
        .map(|i| ((i * 7919) % 1013) as f32 / 300.0 - 1.7)
        .collect();
    let run = |device: &Device| {
        let data = TensorData::new(xs.clone(), [batch, seq, width]);
        let qkv = Tensor::<3>::from_data(data, device).require_grad();
        let bias = remem::nn::causal_mask(seq).bias(device);
        let out = remem::nn::fused_attention(qkv.clone(), bias, 2, 0.35);
        let loss = (out.clone() * out.clone().cos()).sum();
        let grad = qkv.grad(&loss.backward()).expect("qkv gradient");
        (common::values(out), common::values(grad))
    };
    let (out_cpu, grad_cpu) = run(&Device::flex().autodiff());
    let (out_gpu, grad_gpu) = run(&gpu);
    let diff = common::max_abs_diff(&out_cpu, &out_gpu);
    assert!(diff < 1e-5, "contexts differ by {diff}");
    let diff = common::max_abs_diff(&grad_cpu, &grad_gpu);
    assert!(diff < 1e-4, "gradients differ by {diff}");
    assert!(
        grad_cpu.iter().any(|g| g.abs() > 0.05),
        "gradient trivially small"
    );
}

/// The GPU, as the tests of this file share it: a count of launched kernels ([`launched`])
/// sees every kernel the process launches, so a test that counts holds it alone
/// ([`gpu_alone`]) and the other wgpu tests hold it shared ([`gpu_shared`]). Without this, a
/// model test running beside a count put its own launches of the counted kernel in the count.
static GPU: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// The GPU for a test that counts its kernels: no other wgpu test of this file runs meanwhile.
fn gpu_alone() -> std::sync::RwLockWriteGuard<'static, ()> {
    GPU.write().unwrap_or_else(|e| e.into_inner())
}

/// The GPU for a wgpu test that counts nothing: alongside others like it, never beside a count.
fn gpu_shared() -> std::sync::RwLockReadGuard<'static, ()> {
    GPU.read().unwrap_or_else(|e| e.into_inner())
}

/// Kernels launched by `work`, by name, counted from the runtime. The caller holds the GPU
/// alone ([`gpu_alone`]): the count sees every launch of the process.
fn launched(work: impl FnOnce()) -> std::collections::HashMap<&'static str, usize> {
    use burn::cubecl::logging::{LaunchObservation, LaunchObserver};
    use std::sync::{Arc, Mutex};
    #[derive(Default)]
    struct Count(Mutex<std::collections::HashMap<&'static str, usize>>);
    impl LaunchObserver for Count {
        fn launched(&self, kernel: &'static str) {
            *self.0.lock().unwrap().entry(kernel).or_default() += 1;
        }
    }
    let count = Arc::new(Count::default());
    {
        let _watching = LaunchObservation::new(count.clone());
        work();
    }
    count.0.lock().unwrap().clone()
}

/// `(batch, seq, heads, d_head)` for the WGSL attention kernels' tests: batch 1 and 2,
/// sequences shorter and longer than one block of query rows and not a multiple of the key
/// tile, head widths from 4 to 64.
const ATTENTION_SHAPES: [(usize, usize, usize, usize); 4] =
    [(1, 5, 1, 4), (2, 37, 2, 8), (1, 70, 4, 16), (2, 130, 2, 64)];

/// A packed projection `[batch, seq, width]` and a causal mask with holes (every row's own
/// position open).
fn attention_input(batch: usize, seq: usize, width: usize) -> (Vec<f32>, remem::nn::Mask) {
    let xs: Vec<f32> = (0..batch * seq * width)
        .map(|i| ((i * 7919) % 1013) as f32 / 400.0 - 1.2)
        .collect();
    let mut mask = remem::nn::Mask::blocked(seq, seq);
    for q in 0..seq {
        for k in 0..seq {
            if k == q || (k < q && (q * 3 + k) % 7 != 2) {
                mask.allow(q, k);
            }
        }
    }
    (xs, mask)
}

/// The hand-written WGSL attention kernel (`shaders/attention.wgsl`) gives the context and the
/// weights of the CPU's packed attention, whose own tests check it against Burn's attention:
/// batch 1 and 2, sequences shorter and longer than one block of query rows and not a multiple
/// of the key tile, head widths from 4 to 64, and masks with holes. The kernel must be what ran.
#[test]
fn the_wgsl_attention_kernel_matches_the_cpu() {
    let Some(gpu) = common::wgpu_device() else {
        return;
    };
    let _alone = gpu_alone();
    for (batch, seq, heads, d_head) in ATTENTION_SHAPES {
        let width = 3 * heads * d_head;
        let (xs, mask) = attention_input(batch, seq, width);
        let run = |device: &Device| {
            let qkv =
                Tensor::<3>::from_data(TensorData::new(xs.clone(), [batch, seq, width]), device);
            let bias = mask.bias(device);
            let context = remem::nn::fused_attention(qkv.clone(), bias.clone(), heads, 0.4);
            let (with, weights) = remem::nn::fused_attention_with_weights(qkv, bias, heads, 0.4);
            (
                common::values(context),
                common::values(with),
                common::values(weights),
            )
        };
        let (context, with, weights) = run(&Device::flex());
        let mut on_gpu = None;
        let counts = launched(|| on_gpu = Some(run(&gpu)));
        let (g_context, g_with, g_weights) = on_gpu.unwrap();
        let shape = format!("batch {batch}, seq {seq}, {heads} heads of {d_head}");
        // At least: the observer is process-wide, and other tests launch kernels too. That
        // these calls took the kernel follows from its check having passed (no fallback).
        assert!(
            counts.get("remem::attention").is_some_and(|&n| n >= 2)
                && remem::ops::fallbacks().is_empty(),
            "{shape}: the WGSL kernel did not run ({:?}; fallbacks {:?})",
            counts,
            remem::ops::fallbacks()
        );
        for (what, cpu, gpu) in [
            ("context", &context, &g_context),
            ("context with weights", &with, &g_with),
            ("weights", &weights, &g_weights),
        ] {
            let diff = common::max_abs_diff(cpu, gpu);
            assert!(diff < 1e-4, "{shape}: {what} differs by {diff}");
        }
        assert!(
            weights.iter().any(|&w| w > 0.05) && context.iter().any(|c| c.abs() > 0.05),
            "{shape}: trivially small outputs"
        );
    }
}

/// The WGSL attention backward (`shaders/attention_backward_query.wgsl`, then
/// `shaders/attention_backward_key.wgsl`) gives the CPU's packed gradient at the forward
/// test's shapes (batch 1 and 2, partial row blocks and key tiles, head widths 4 to 64, masks
/// with holes). The kernels must be what ran.
#[test]
fn the_wgsl_attention_backward_matches_the_cpu() {
    let Some(gpu) = common::wgpu_device() else {
        return;
    };
    let _alone = gpu_alone();
    for (batch, seq, heads, d_head) in ATTENTION_SHAPES {
        let width = 3 * heads * d_head;
        let (xs, mask) = attention_input(batch, seq, width);
        let ws: Vec<f32> = (0..batch * seq * width / 3)
            .map(|i| ((i * 104_729) % 997) as f32 / 500.0 - 1.0)
            .collect();
        let run = |device: &Device| {
            let device = device.clone().autodiff();
            let data = TensorData::new(xs.clone(), [batch, seq, width]);
            let qkv = Tensor::<3>::from_data(data, &device).require_grad();
            let w = TensorData::new(ws.clone(), [batch, seq, width / 3]);
            let w = Tensor::<3>::from_data(w, &device);
            let context = remem::nn::fused_attention(qkv.clone(), mask.bias(&device), heads, 0.4);
            let grads = (context * w).sum().backward();
            common::values(qkv.grad(&grads).expect("qkv gradient"))
        };
        let want = run(&Device::flex());
        let mut on_gpu = None;
        let counts = launched(|| on_gpu = Some(run(&gpu)));
        let got = on_gpu.unwrap();
        let shape = format!("batch {batch}, seq {seq}, {heads} heads of {d_head}");
        for kernel in ["remem::attention_backward", "remem::attention_backward_key"] {
            assert!(
                counts.get(kernel).is_some_and(|&n| n >= 1) && remem::ops::fallbacks().is_empty(),
                "{shape}: {kernel} did not run ({counts:?}; fallbacks {:?})",
                remem::ops::fallbacks()
            );
        }
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(scale > 0.05, "{shape}: trivially small gradient");
        let diff = common::max_abs_diff(&want, &got) / scale;
        assert!(
            diff < 1e-3,
            "{shape}: the packed gradient differs by {diff} (relative)"
        );
    }
}

/// The WGSL attention kernels with the queries from a later row and rotary positions
/// (Transformer-XL's attention over `[cache | segment]` in training): the context and the
/// packed gradient of the operation's reference on the CPU, at the kernels' test shapes with a
/// third of the rows cached, and the rows asking nothing get no query gradient. The kernels
/// must be what ran.
#[test]
fn the_wgsl_attention_over_a_cache_with_rotary_positions_matches_the_cpu() {
    let Some(gpu) = common::wgpu_device() else {
        return;
    };
    let _alone = gpu_alone();
    for (batch, seq, heads, d_head) in ATTENTION_SHAPES {
        let width = 3 * heads * d_head;
        let first = seq / 3;
        let (xs, mask) = attention_input(batch, seq, width);
        // The mask's rows from `first` on: each row's own position stays open.
        let rows: Vec<f32> = common::values(mask.bias(&Device::flex()))[first * seq..].to_vec();
        let ws: Vec<f32> = (0..batch * (seq - first) * width / 3)
            .map(|i| ((i * 104_729) % 997) as f32 / 500.0 - 1.0)
            .collect();
        let table = burn::nn::RotaryEncodingConfig::new(seq, d_head)
            .init(&Device::flex())
            .freq_complex
            .into_data();
        let run = |device: &Device| {
            let device = device.clone().autodiff();
            let data = TensorData::new(xs.clone(), [batch, seq, width]);
            let qkv = Tensor::<3>::from_data(data, &device).require_grad();
            let bias =
                Tensor::<2>::from_data(TensorData::new(rows.clone(), [seq - first, seq]), &device);
            let rope = Tensor::<3>::from_data(table.clone(), &device);
            let w = TensorData::new(ws.clone(), [batch, seq - first, width / 3]);
            let w = Tensor::<3>::from_data(w, &device);
            let context =
                remem::nn::fused_attention_over(qkv.clone(), bias, Some(rope), first, heads, 0.4);
            let grads = (context.clone() * w).sum().backward();
            (
                common::values(context),
                common::values(qkv.grad(&grads).expect("qkv gradient")),
            )
        };
        let (want_context, want) = run(&Device::flex());
        let mut on_gpu = None;
        let counts = launched(|| on_gpu = Some(run(&gpu)));
        let (context, got) = on_gpu.unwrap();
        let shape = format!("batch {batch}, seq {seq} from {first}, {heads} heads of {d_head}");
        for kernel in [
            "remem::attention",
            "remem::attention_backward",
            "remem::attention_backward_key",
        ] {
            assert!(
                counts.get(kernel).is_some_and(|&n| n >= 1) && remem::ops::fallbacks().is_empty(),
                "{shape}: {kernel} did not run ({counts:?}; fallbacks {:?})",
                remem::ops::fallbacks()
            );
        }
        let diff = common::max_abs_diff(&want_context, &context);
        assert!(diff < 1e-4, "{shape}: contexts differ by {diff}");
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(scale > 0.05, "{shape}: trivially small gradient");
        let diff = common::max_abs_diff(&want, &got) / scale;
        assert!(
            diff < 1e-3,
            "{shape}: the packed gradient differs by {diff} (relative)"
        );
        let d = width / 3;
        for r in 0..batch * first {
            let at = ((r / first) * seq + r % first) * width;
            assert!(
                got[at..at + d].iter().all(|&g| g == 0.0),
                "{shape}: cached row {r} got a query gradient"
            );
        }
    }
}

/// Rows narrower and wider than a workgroup, one row and many.
const LAYER_NORM_SHAPES: [(usize, usize); 4] = [(1, 5), (24, 64), (37, 100), (300, 257)];

/// A layer norm's input `[rows, d]` (offsets and spreads that differ by row), scale and shift.
fn layer_norm_input(rows: usize, d: usize) -> [TensorData; 3] {
    let xs: Vec<f32> = (0..rows * d)
        .map(|i| ((i * 7919) % 1013) as f32 / 300.0 * (1.0 + (i / d) as f32 % 5.0) - 2.0)
        .collect();
    let gamma: Vec<f32> = (0..d).map(|i| 0.5 + i as f32 / 50.0).collect();
    let beta: Vec<f32> = (0..d).map(|i| (i as f32 / 3.0).cos()).collect();
    [
        TensorData::new(xs, [rows, d]),
        TensorData::new(gamma, [d]),
        TensorData::new(beta, [d]),
    ]
}

/// The WGSL layer norm kernel (`shaders/layer_norm.wgsl`) gives the CPU's layer norm: rows
/// narrower and wider than a workgroup, one row and many, offsets and spreads that differ by
/// row. The kernel must be what ran.
#[test]
fn the_wgsl_layer_norm_kernel_matches_the_cpu() {
    let Some(gpu) = common::wgpu_device() else {
        return;
    };
    let _alone = gpu_alone();
    for (rows, d) in LAYER_NORM_SHAPES {
        let run = |device: &Device| {
            let [x, gamma, beta] = layer_norm_input(rows, d);
            common::values(remem::nn::layer_norm(
                Tensor::<2>::from_data(x, device),
                Tensor::<1>::from_data(gamma, device),
                Tensor::<1>::from_data(beta, device),
                1e-5,
            ))
        };
        let cpu = run(&Device::flex());
        let mut on_gpu = None;
        let counts = launched(|| on_gpu = Some(run(&gpu)));
        let gpu_values = on_gpu.unwrap();
        // At least: the observer is process-wide, and other tests launch kernels too. That
        // this call took the kernel follows from its check having passed (no fallback).
        assert!(
            counts.get("remem::layer_norm").is_some_and(|&n| n >= 1)
                && remem::ops::fallbacks().is_empty(),
            "{rows} x {d}: the WGSL kernel did not run ({counts:?}; fallbacks {:?})",
            remem::ops::fallbacks()
        );
        let diff = common::max_abs_diff(&cpu, &gpu_values);
        assert!(diff < 1e-4, "{rows} x {d}: differs by {diff}");
        assert!(cpu.iter().any(|v| v.abs() > 0.5), "trivially small outputs");
    }
}

/// The WGSL layer norm backward (`shaders/layer_norm_backward.wgsl`, from the statistics the
/// training forward kept) gives the CPU's gradients for the input, the scale and the shift, at
/// the same shapes as the forward's test. The kernels must be what ran.
#[test]
fn the_wgsl_layer_norm_backward_matches_the_cpu() {
    let Some(gpu) = common::wgpu_device() else {
        return;
    };
    let _alone = gpu_alone();
    for (rows, d) in LAYER_NORM_SHAPES {
        let weights: Vec<f32> = (0..rows * d)
            .map(|i| ((i * 104_729) % 997) as f32 / 500.0 - 1.0)
            .collect();
        let run = |device: &Device| {
            let device = device.clone().autodiff();
            let [x, gamma, beta] = layer_norm_input(rows, d);
            let x = Tensor::<2>::from_data(x, &device).require_grad();
            let gamma = Tensor::<1>::from_data(gamma, &device).require_grad();
            let beta = Tensor::<1>::from_data(beta, &device).require_grad();
            let w = Tensor::<2>::from_data(TensorData::new(weights.clone(), [rows, d]), &device);
            let y = remem::nn::layer_norm(x.clone(), gamma.clone(), beta.clone(), 1e-5);
            let grads = (y * w).sum().backward();
            [
                common::values(x.grad(&grads).unwrap()),
                common::values(gamma.grad(&grads).unwrap()),
                common::values(beta.grad(&grads).unwrap()),
            ]
        };
        let cpu = run(&Device::flex());
        let mut on_gpu = None;
        let counts = launched(|| on_gpu = Some(run(&gpu)));
        let on_gpu = on_gpu.unwrap();
        for kernel in ["remem::layer_norm", "remem::layer_norm_backward"] {
            assert!(
                counts.get(kernel).is_some_and(|&n| n >= 1) && remem::ops::fallbacks().is_empty(),
                "{rows} x {d}: {kernel} did not run ({counts:?}; fallbacks {:?})",
                remem::ops::fallbacks()
            );
        }
        for (what, (want, got)) in ["input", "scale", "shift"]
            .iter()
            .zip(cpu.iter().zip(&on_gpu))
        {
            let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
            let diff = common::max_abs_diff(want, got) / scale;
            assert!(
                diff < 1e-3,
                "{rows} x {d}: the {what} gradient differs by {diff} (relative)"
            );
        }
    }
}

/// The WGSL cross-entropy (`shaders/cross_entropy.wgsl` and its backward), which training's
/// loss runs on wgpu, gives the CPU's total loss, count of arg-max hits and logit gradients:
/// one row and many, vocabularies smaller and larger than the workgroup and not multiples of
/// it, zero weights, targets at both ends of the row, maxima tied between columns. Both kernels
/// must be what ran.
#[test]
fn the_wgsl_cross_entropy_matches_the_cpu() {
    let Some(gpu) = common::wgpu_device() else {
        return;
    };
    let _alone = gpu_alone();
    for (rows, vocab) in [(1, 5), (3, 64), (37, 300), (130, 1000)] {
        let mut logits: Vec<f32> = (0..rows * vocab)
            .map(|i| ((i * 7919) % 1013) as f32 / 60.0 - 8.0)
            .collect();
        let targets: Vec<i64> = (0..rows)
            .map(|r| match r % 3 {
                0 => 0,
                1 => vocab as i64 - 1,
                _ => ((r * 31) % vocab) as i64,
            })
            .collect();
        // Some rows' arg-max is their target; in some of those a column before ties with it.
        for (r, &target) in targets.iter().enumerate() {
            let (target, row) = (target as usize, &mut logits[r * vocab..(r + 1) * vocab]);
            if r % 2 == 0 {
                row[target] = 9.0;
            }
            if r % 4 == 2 && target > 0 {
                row[target - 1] = 9.0;
            }
        }
        let weights: Vec<f32> = (0..rows).map(|r| [1.0, 0.0, 0.5, 1.0][r % 4]).collect();
        let run = |device: &Device| {
            let ad = device.clone().autodiff();
            let l = Tensor::<2>::from_data(TensorData::new(logits.clone(), [rows, vocab]), &ad)
                .require_grad();
            let t = Tensor::<1, Int>::from_data(TensorData::new(targets.clone(), [rows]), &ad);
            let w = Tensor::<1>::from_data(TensorData::new(weights.clone(), [rows]), &ad);
            let totals = remem::ops::cross_entropy::cross_entropy_totals(l.clone(), t, w);
            let grads = (totals.clone().slice(0..1) * 1.7).backward();
            (
                common::values(totals.inner()),
                common::values(l.grad(&grads).unwrap()),
            )
        };
        let (want, want_grad) = run(&Device::flex());
        // The once-per-device checks run the kernels too: done before counting.
        run(&gpu);
        let mut got = None;
        let counts = launched(|| got = Some(run(&gpu)));
        let (got, got_grad) = got.unwrap();
        for kernel in ["remem::cross_entropy", "remem::cross_entropy_backward"] {
            assert!(
                counts.get(kernel) == Some(&1) && remem::ops::fallbacks().is_empty(),
                "{rows} x {vocab}: {kernel} did not run once ({counts:?}; fallbacks {:?})",
                remem::ops::fallbacks()
            );
        }
        assert!(
            (got[0] - want[0]).abs() < 1e-4 * want[0].abs().max(1.0),
            "{rows} x {vocab}: the total losses differ: {} against {}",
            got[0],
            want[0]
        );
        assert_eq!(
            got[1], want[1],
            "{rows} x {vocab}: the counts of hits differ"
        );
        let diff = common::max_diff(&got_grad, &want_grad);
        assert!(
            diff < 1e-5,
            "{rows} x {vocab}: the gradients differ by {diff}"
        );
        assert!(want[0] > 1e-3, "{rows} x {vocab}: no loss");
        assert!(want[1] > 0.0, "{rows} x {vocab}: no hits");
    }
}

/// The WGSL layout embedding (`shaders/embed.wgsl` and its backward), which RMT's and ARMT's
/// training and streaming run on wgpu, gives the rows and the table, memory and position
/// gradients of Burn's own operations on the CPU (the embedding's gather, the join, the
/// positions' add): whole and partial segments, with read rows (RMT) and without (ARMT), with
/// write rows and without, the token ids a slice of a wider batch, the memory a slice of
/// earlier rows or one learned memory broadcast over the batch (all read in place). Both
/// kernels must be what ran.
#[test]
fn the_wgsl_layout_embedding_matches_burns_operations() {
    let Some(gpu) = common::wgpu_device() else {
        return;
    };
    let _alone = gpu_alone();
    let (vocab, d, batch, m, t_max) = (13, 70, 3, 2, 5);
    let p = 2 * m + t_max;
    let value = |i: usize, salt: usize| ((i * 7919 + salt) % 1013) as f32 / 500.0 - 1.0;
    for (t, read, write, broadcast) in [
        (5, true, true, false),
        (3, true, true, true),
        (5, true, false, true),
        (3, true, false, false),
        (5, false, true, true),
        (3, false, true, true),
        (4, false, true, false),
    ] {
        let lead = usize::from(read) * m;
        let rows = lead + t + usize::from(write) * m;
        let run = |device: &Device, ours: bool| {
            let ad = device.clone().autodiff();
            let param = |shape: Vec<usize>, salt: usize| {
                let n = shape.iter().product();
                let xs: Vec<f32> = (0..n).map(|i| value(i, salt)).collect();
                Tensor::<2>::from_data(TensorData::new(xs, shape), &ad).require_grad()
            };
            let table = param(vec![vocab, d], 1);
            let positions = param(vec![p, d], 2);
            // The memory: rows 4.. of earlier rows, or one learned memory for the batch.
            let source = param(vec![batch * (m + 4), d], 3);
            let memory = match broadcast {
                true => source
                    .clone()
                    .slice(s![0..m, ..])
                    .unsqueeze::<3>()
                    .expand([batch, m, d]),
                false => source
                    .clone()
                    .reshape([batch, m + 4, d])
                    .slice(s![.., 4.., ..]),
            };
            let ids: Vec<i64> = (0..batch * 2 * t_max)
                .map(|i| ((i * 5) % vocab) as i64)
                .collect();
            let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [batch, 2 * t_max]), &ad);
            let tokens = ids.slice(s![.., t_max..t_max + t]);
            let out = match ours {
                true => remem::ops::embed::embed_layout(
                    table.clone(),
                    tokens,
                    memory,
                    positions.clone(),
                    read,
                    write,
                ),
                false => {
                    let x = table
                        .clone()
                        .select(0, tokens.reshape([batch * t]))
                        .reshape([batch, t, d]);
                    let mut parts = vec![x];
                    let mut pos = vec![positions.clone().slice(s![0..lead + t, ..])];
                    if read {
                        parts.insert(0, memory.clone());
                    }
                    if write {
                        parts.push(memory);
                        pos.push(positions.clone().slice(s![p - m..p, ..]));
                    }
                    Tensor::cat(parts, 1) + Tensor::cat(pos, 0).unsqueeze::<3>()
                }
            };
            assert_eq!(out.dims(), [batch, rows, d]);
            // A different weight per element, so every gradient entry is told apart.
            let weights: Vec<f32> = (0..batch * rows * d).map(|i| value(i, 4) + 1.5).collect();
            let weights = Tensor::<3>::from_data(TensorData::new(weights, [batch, rows, d]), &ad);
            let grads = (out.clone() * weights).sum().backward();
            [
                common::values(out.inner()),
                common::values(table.grad(&grads).unwrap()),
                common::values(source.grad(&grads).unwrap()),
                common::values(positions.grad(&grads).unwrap()),
            ]
        };
        let want = run(&Device::flex(), false);
        // The once-per-device checks run the kernels too: done before counting.
        run(&gpu, true);
        let mut got = None;
        let counts = launched(|| got = Some(run(&gpu, true)));
        let got = got.unwrap();
        for kernel in ["remem::embed", "remem::embed_backward"] {
            assert!(
                counts.get(kernel) == Some(&1) && remem::ops::fallbacks().is_empty(),
                "t {t}, read {read}, write {write}: {kernel} did not run once ({counts:?}; \
                 fallbacks {:?})",
                remem::ops::fallbacks()
            );
        }
        for (what, (got, want)) in [
            "rows",
            "table gradient",
            "memory gradient",
            "position gradient",
        ]
        .iter()
        .zip(got.iter().zip(&want))
        {
            let diff = common::max_diff(got, want);
            assert!(
                diff < 1e-5,
                "t {t}, read {read}, write {write}: the {what} differs by {diff}"
            );
            assert!(want.iter().any(|&v| v != 0.0), "t {t}: no {what}");
        }
    }
}

/// The WGSL inference product (`shaders/affine.wgsl`), which every linear layer of a streaming
/// step runs on wgpu, gives Burn's product, bias, GELU and residual on the CPU, and with a layer
/// norm of its input rows Burn's layer norm before them (a pre-norm block's norm and product):
/// three leading axes folded into rows, widths that are not multiples of its tile (an odd inner
/// width among them), one row and many. The kernel must be what ran.
#[test]
fn the_wgsl_inference_product_matches_the_cpu() {
    use remem::ops::affine::{Epilogue, RowNorm, affine};
    let Some(gpu) = common::wgpu_device() else {
        return;
    };
    let _alone = gpu_alone();
    let value = |i: usize, salt: usize| ((i * 7919 + salt) % 1013) as f32 / 400.0 - 1.2;
    for (batch, seq, k, n) in [
        (1, 1, 3, 5),
        (2, 20, 98, 245),
        (3, 17, 245, 98),
        (1, 40, 64, 16),
        (2, 70, 33, 130),
    ] {
        for (epilogue, norm) in [Epilogue::None, Epilogue::Gelu, Epilogue::Residual]
            .into_iter()
            .flat_map(|e| [(e, false), (e, true)])
        {
            let run = |device: &Device, ours: bool| {
                let data =
                    |len: usize, salt| (0..len).map(|i| value(i, salt)).collect::<Vec<f32>>();
                let x = Tensor::<3>::from_data(
                    TensorData::new(data(batch * seq * k, 1), [batch, seq, k]),
                    device,
                );
                let w = Tensor::<2>::from_data(TensorData::new(data(k * n, 2), [k, n]), device);
                let b = Tensor::<1>::from_data(TensorData::new(data(n, 3), [n]), device);
                let r = Tensor::<3>::from_data(
                    TensorData::new(data(batch * seq * n, 4), [batch, seq, n]),
                    device,
                );
                let gamma = Tensor::<1>::from_data(TensorData::new(data(k, 5), [k]), device);
                let beta = Tensor::<1>::from_data(TensorData::new(data(k, 6), [k]), device);
                let y = match ours {
                    true => {
                        let residual = (epilogue == Epilogue::Residual).then_some(r);
                        let norm = norm.then_some(RowNorm {
                            gamma,
                            beta,
                            epsilon: 1e-5,
                        });
                        affine(x, w, b, residual, epilogue, norm)
                    }
                    false => {
                        let x = match norm {
                            true => {
                                let mut layer = burn::nn::LayerNormConfig::new(k).init(device);
                                layer.gamma = burn::module::Param::from_tensor(gamma);
                                layer.beta = Some(burn::module::Param::from_tensor(beta));
                                layer.forward(x)
                            }
                            false => x,
                        };
                        let y = x.matmul(w.unsqueeze::<3>()) + b.unsqueeze::<3>();
                        match epilogue {
                            Epilogue::None => y,
                            Epilogue::Gelu => burn::tensor::activation::gelu(y),
                            Epilogue::Residual => y + r,
                        }
                    }
                };
                common::values(y)
            };
            let want = run(&Device::flex(), false);
            // The once-per-device check runs the kernel too: done before counting.
            run(&gpu, true);
            let mut got = None;
            let counts = launched(|| got = Some(run(&gpu, true)));
            assert!(
                counts.get("remem::affine") == Some(&1) && remem::ops::fallbacks().is_empty(),
                "{epilogue:?}, norm {norm} [{batch}, {seq}, {k}] x [{k}, {n}]: the kernel did not run once ({counts:?}; fallbacks {:?})",
                remem::ops::fallbacks()
            );
            let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
            let diff = common::max_diff(&got.unwrap(), &want) / scale;
            assert!(
                diff < 1e-5,
                "{epilogue:?}, norm {norm} [{batch}, {seq}, {k}] x [{k}, {n}]: differs by {diff} (relative)"
            );
        }
    }
}

/// The WGSL attention over keys and values given apart (`shaders/kv_attention.wgsl`), which
/// Transformer-XL and the infinity-former run over `[cache | segment]` when streaming on wgpu,
/// gives on the CPU Burn's rotary encoding of the queries (from the cache's length) and keys,
/// then scaled scores, the mask, softmax and the weighted values: with rotary positions and
/// without, one query and many, fewer queries than keys and as many, heads of 2 to 32, a mask
/// with holes. The kernel must be what ran.
#[test]
fn the_wgsl_attention_over_a_cache_matches_the_cpu() {
    use remem::ops::kv_attention::kv_attention;
    let Some(gpu) = common::wgpu_device() else {
        return;
    };
    let _alone = gpu_alone();
    let value = |i: usize, salt: usize| ((i * 7919 + salt) % 1013) as f32 / 400.0 - 1.2;
    for (batch, seq_q, seq_k, heads, d_head) in [
        (1, 1, 1, 1, 2),
        (2, 8, 24, 4, 16),
        (1, 70, 90, 2, 32),
        (3, 5, 5, 2, 8),
    ] {
        let width = heads * d_head;
        let start = seq_k - seq_q;
        let mut mask = remem::nn::Mask::blocked(seq_q, seq_k);
        for i in 0..seq_q {
            for j in 0..=start + i {
                if (3 * i + j) % 7 != 2 || j == start + i {
                    mask.allow(i, j);
                }
            }
        }
        for rotary in [false, true] {
            let run = |device: &Device, ours: bool| {
                let data =
                    |len: usize, salt| (0..len).map(|i| value(i, salt)).collect::<Vec<f32>>();
                let q = Tensor::<3>::from_data(
                    TensorData::new(data(batch * seq_q * width, 1), [batch, seq_q, width]),
                    device,
                );
                let kv = Tensor::<3>::from_data(
                    TensorData::new(
                        data(batch * seq_k * 2 * width, 2),
                        [batch, seq_k, 2 * width],
                    ),
                    device,
                );
                let rope = burn::nn::RotaryEncodingConfig::new(seq_k + 3, d_head).init(device);
                let scale = 1.0 / (d_head as f64).sqrt();
                let y = if ours {
                    let table = rotary.then(|| (rope.freq_complex.clone(), start));
                    kv_attention(q, kv, mask.bias(device), table, heads, scale)
                } else {
                    let heads_of =
                        |x: Tensor<3>, seq| x.reshape([batch, seq, heads, d_head]).swap_dims(1, 2);
                    let q = heads_of(q, seq_q);
                    let k = heads_of(kv.clone().slice(s![.., .., ..width]), seq_k);
                    let v = heads_of(kv.slice(s![.., .., width..]), seq_k);
                    let (q, k) = match rotary {
                        true => (rope.apply(q, start), rope.apply(k, 0)),
                        false => (q, k),
                    };
                    let scores =
                        q.matmul(k.swap_dims(2, 3)) * scale + mask.bias(device).unsqueeze::<4>();
                    let weights = burn::tensor::activation::softmax(scores, 3);
                    weights
                        .matmul(v)
                        .swap_dims(1, 2)
                        .reshape([batch, seq_q, width])
                };
                common::values(y)
            };
            let want = run(&Device::flex(), false);
            // The once-per-device check runs the kernel too: done before counting.
            run(&gpu, true);
            let mut got = None;
            let counts = launched(|| got = Some(run(&gpu, true)));
            let what =
                format!("rotary {rotary}, [{batch}, {seq_q}] over {seq_k}, {heads} x {d_head}");
            assert!(
                counts.get("remem::kv_attention") == Some(&1) && remem::ops::fallbacks().is_empty(),
                "{what}: the kernel did not run once ({counts:?}; fallbacks {:?})",
                remem::ops::fallbacks()
            );
            let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
            let diff = common::max_diff(&got.unwrap(), &want) / scale;
            assert!(diff < 1e-4, "{what}: differs by {diff} (relative)");
        }
    }
}

/// The WGSL read of ARMT's associative store (`shaders/store_read.wgsl`), which every ARMT layer
/// runs when streaming on wgpu, gives what the definitions give, written out here on the host:
/// DPFP-3 features of each row's projected query (`r = [relu(x), relu(-x)]`, feature
/// `(j - 1)·2K + i` = `r[i]·r[(i - j) mod 2K]`), made unit length, then `A·φ`, divided by
/// `z·φ + 1e-5` under the normalised rule, with and without a residual added. One row and many,
/// keys of width 1 to 32 (some rows all zero), values narrower and wider than the workgroup.
/// The kernel must be what ran.
#[test]
fn the_wgsl_store_read_matches_its_definition() {
    use remem::ops::store_read::store_read;
    let Some(gpu) = common::wgpu_device() else {
        return;
    };
    let _alone = gpu_alone();
    let value = |i: usize, salt: usize| ((i * 7919 + salt) % 1013) as f32 / 400.0 - 1.2;
    for (batch, n, k, d) in [
        (1, 1, 1, 1),
        (2, 19, 5, 70),
        (1, 80, 16, 64),
        (3, 7, 32, 130),
    ] {
        let f = 6 * k;
        let keys: Vec<f32> = (0..batch * n * k)
            .map(|i| if (i / k) % 9 == 4 { 0.0 } else { value(i, 1) })
            .collect();
        let store: Vec<f32> = (0..batch * f * (d + 1))
            .map(|i| match i % (d + 1) == d {
                true => 0.3 + value(i, 2).abs(),
                false => value(i, 2),
            })
            .collect();
        for normalised in [false, true] {
            let mut want = Vec::with_capacity(batch * n * d);
            for b in 0..batch {
                for row in 0..n {
                    let x = &keys[(b * n + row) * k..][..k];
                    let r: Vec<f32> = x
                        .iter()
                        .map(|v| v.max(0.0))
                        .chain(x.iter().map(|v| (-v).max(0.0)))
                        .collect();
                    let w = 2 * k;
                    let mut phi: Vec<f32> = (1..=3)
                        .flat_map(|j| (0..w).map(move |i| (i, j)))
                        .map(|(i, j)| r[i] * r[(i + w - j) % w])
                        .collect();
                    let size = (phi.iter().map(|v| v * v).sum::<f32>() + 1e-12).sqrt();
                    phi.iter_mut().for_each(|v| *v /= size);
                    let column = |c: usize| -> f32 {
                        (0..f)
                            .map(|i| phi[i] * store[(b * f + i) * (d + 1) + c])
                            .sum()
                    };
                    let norm = if normalised { column(d) + 1e-5 } else { 1.0 };
                    want.extend((0..d).map(|c| column(c) / norm));
                }
            }
            // Without and with the residual stream the read joins, added in the kernel.
            let residual: Vec<f32> = (0..batch * n * d).map(|i| value(i, 3)).collect();
            for add in [false, true] {
                let want: Vec<f32> = match add {
                    true => want.iter().zip(&residual).map(|(w, r)| w + r).collect(),
                    false => want.clone(),
                };
                let run = || {
                    common::values(store_read(
                        Tensor::from_data(TensorData::new(keys.clone(), [batch, n, k]), &gpu),
                        Tensor::from_data(TensorData::new(store.clone(), [batch, f, d + 1]), &gpu),
                        add.then(|| {
                            Tensor::from_data(
                                TensorData::new(residual.clone(), [batch, n, d]),
                                &gpu,
                            )
                        }),
                        normalised,
                    ))
                };
                let what = format!(
                    "normalised {normalised}, residual {add}, [{batch}, {n}, {k}] over d {d}"
                );
                assert_kernels_match(&what, &[("remem::store_read", 1)], &want, run);
            }
        }
    }
}

/// ARMT's store on wgpu, where a streaming session writes it with `shaders/store_write.wgsl`
/// and reads it with `shaders/store_read.wgsl`, holds and returns what the module's own
/// operations give on the CPU: three writes in a row (the second repeats rows, so keys are
/// shared) and a read after each, under both rules, one sequence and several, memory rows of
/// 1 to 10, values narrower and wider than a workgroup. Both kernels must be what ran, except
/// for a store too large for the write kernel, which Burn's operations write (as exactly).
#[test]
fn the_wgsl_store_write_matches_the_cpu() {
    use remem::nn::{AssociativeMemory, Init, StoreRule};
    let Some(gpu) = common::wgpu_device() else {
        return;
    };
    let _alone = gpu_alone();
    let value = |i: usize, salt: usize| ((i * 7919 + salt) % 1013) as f32 / 300.0 - 1.6;
    // The last store is too large for the write kernel's workgroup memory (16 rows of 192
    // features and 128 values): Burn's operations write it.
    let cases = [
        (1, 1usize, 8, 2, 3),
        (2, 4, 16, 4, 3),
        (3, 10, 70, 8, 3),
        (1, 16, 128, 32, 0),
    ];
    for (batch, m, d, key_dim, writes) in cases {
        for rule in [StoreRule::Normalised, StoreRule::Delta] {
            let run = |device: &Device| {
                let memory = AssociativeMemory::new(d, key_dim, rule, &mut Init::new(5, device));
                let rows = |salt: usize, n: usize| {
                    let v: Vec<f32> = (0..batch * n * d).map(|i| value(i, salt)).collect();
                    Tensor::<3>::from_data(TensorData::new(v, [batch, n, d]), device)
                };
                let mut store = memory.empty(batch, device);
                let mut seen = Vec::new();
                for salt in [1, 2, 3] {
                    let written = match salt {
                        // Each row twice: keys written together share everything.
                        2 => Tensor::cat(vec![rows(salt, m.div_ceil(2)); 2], 1).slice(s![
                            ..,
                            0..m,
                            ..
                        ]),
                        _ => rows(salt, m),
                    };
                    store = memory.write(written, store);
                    seen.extend(common::values(store.clone()));
                    seen.extend(common::values(
                        memory.read(rows(salt + 10, 7), store.clone()),
                    ));
                }
                seen
            };
            let want = run(&Device::flex());
            let what = format!("{rule:?}, [{batch}, {m}, {d}], keys of {key_dim}");
            let kernels = [("remem::store_write", writes), ("remem::store_read", 3)];
            assert_kernels_match(&what, &kernels, &want, || run(&gpu));
        }
    }
}

/// `run` (on the GPU, held alone) gives `want` within 1e-4 (relative to its largest entry),
/// each of `kernels` launched as many times as said, and no kernel fell back. Runs `run` once
/// first: the once-per-device checks launch the kernels too.
fn assert_kernels_match(
    what: &str,
    kernels: &[(&str, usize)],
    want: &[f32],
    run: impl Fn() -> Vec<f32>,
) {
    run();
    let mut got = None;
    let counts = launched(|| got = Some(run()));
    assert!(
        kernels
            .iter()
            .all(|(k, n)| counts.get(k).copied().unwrap_or(0) == *n)
            && remem::ops::fallbacks().is_empty(),
        "{what}: the kernels did not run as {kernels:?} ({counts:?}; fallbacks {:?})",
        remem::ops::fallbacks()
    );
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    let diff = common::max_diff(&got.unwrap(), want) / scale;
    assert!(diff < 1e-4, "{what}: differs by {diff} (relative)");
}

/// The WGSL read of the infinity-former's long-term memory (`shaders/ltm_read.wgsl`) gives on
/// the CPU the module's formulas written out: scaled scores, the mean a sigmoid and the variance
/// a softplus (at least the minimum) of their weighted sums, each basis function's Gaussian
/// expectation and the weighted values; one query and many, 1 to 4 heads, variances on both
/// sides of the minimum. The kernel must be what ran.
#[test]
fn the_wgsl_long_term_memory_read_matches_the_cpu() {
    use burn::tensor::activation::{sigmoid, softplus};
    use remem::ops::ltm_read::ltm_read;
    let Some(gpu) = common::wgpu_device() else {
        return;
    };
    let _alone = gpu_alone();
    let value = |i: usize, salt: usize| ((i * 7919 + salt) % 1013) as f32 / 400.0 - 1.2;
    for (batch, seq_q, n, heads, d_head, variance_bias) in [
        (1, 1, 4, 1, 4, 0.5),
        (2, 9, 16, 2, 16, -12.0),
        (1, 70, 32, 4, 8, 2.0),
    ] {
        let width = heads * d_head;
        let run = |device: &Device, ours: bool| {
            let data = |len: usize, salt| (0..len).map(|i| value(i, salt)).collect::<Vec<f32>>();
            let q = Tensor::<3>::from_data(
                TensorData::new(data(batch * seq_q * width, 1), [batch, seq_q, width]),
                device,
            );
            let kv = Tensor::<3>::from_data(
                TensorData::new(data(batch * n * 2 * width, 2), [batch, n, 2 * width]),
                device,
            );
            let w_mu = data(n, 3);
            let w_sigma = data(n, 4);
            let centres: Vec<f32> = (0..n).map(|j| j as f32 / (n - 1) as f32).collect();
            let widths2: Vec<f32> = (0..n).map(|j| 0.005 + 0.01 * j as f32).collect();
            let scale = 1.0 / (d_head as f64).sqrt();
            if ours {
                let mut params = w_mu.clone();
                params.push(0.3);
                params.extend(&w_sigma);
                params.push(variance_bias);
                params.extend(&centres);
                params.extend(&widths2);
                let params = Tensor::<1>::from_data(TensorData::new(params, [4 * n + 2]), device);
                let (context, mu, variance) = ltm_read(q, kv, params, heads, scale, 1e-4);
                let mut out = common::values(context);
                out.extend(common::values(mu));
                out.extend(common::values(variance));
                return out;
            }
            let column = |v: Vec<f32>| {
                Tensor::<2>::from_data(TensorData::new(v, [n, 1]), device).unsqueeze::<4>()
            };
            let row = |v: Vec<f32>| {
                Tensor::<1>::from_data(TensorData::new(v, [n]), device).unsqueeze::<4>()
            };
            let heads_of =
                |x: Tensor<3>, seq| x.reshape([batch, seq, heads, d_head]).swap_dims(1, 2);
            let k = heads_of(kv.clone().slice(s![.., .., ..width]), n);
            let v = heads_of(kv.slice(s![.., .., width..]), n);
            let scores = heads_of(q, seq_q).matmul(k.swap_dims(2, 3)) * scale;
            let mu = sigmoid(scores.clone().matmul(column(w_mu)) + 0.3);
            let variance = softplus(scores.matmul(column(w_sigma)) + variance_bias as f64, 1.0)
                .clamp_min(1e-4);
            let var = variance.clone() + row(widths2);
            let x = mu.clone() - row(centres);
            let r = (x.clone() * x / (var.clone() * -2.0)).exp()
                / (var * (2.0 * std::f64::consts::PI)).sqrt();
            let context = r.matmul(v).swap_dims(1, 2).reshape([batch, seq_q, width]);
            let mut out = common::values(context);
            out.extend(common::values(mu.reshape([batch, heads, seq_q])));
            out.extend(common::values(variance.reshape([batch, heads, seq_q])));
            out
        };
        let want = run(&Device::flex(), false);
        // The once-per-device check runs the kernel too: done before counting.
        run(&gpu, true);
        let mut got = None;
        let counts = launched(|| got = Some(run(&gpu, true)));
        let what = format!("[{batch}, {seq_q}] reading {n} with {heads} x {d_head}");
        assert!(
            counts.get("remem::ltm_read") == Some(&1) && remem::ops::fallbacks().is_empty(),
            "{what}: the kernel did not run once ({counts:?}; fallbacks {:?})",
            remem::ops::fallbacks()
        );
        let got = got.unwrap();
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                "{what}: output {i} is {a}, the CPU's {b}"
            );
        }
    }
}

/// The WGSL rotary turn (`shaders/rotary.wgsl`), which training on wgpu applies to the query
/// and key projections' rows as it splits them into heads, gives Burn's `RotaryEncoding::apply`
/// on the heads on the CPU, and
/// its gradient (the transposed turn, the same kernel) Burn's autodiff through it: one row and
/// many, from position 0 and later, heads of 2 to 32. The kernel must be what ran, once each way.
#[test]
fn the_wgsl_rotary_turn_and_its_gradient_match_the_cpu() {
    use remem::ops::rotary::rotary_heads;
    let Some(gpu) = common::wgpu_device().map(Device::autodiff) else {
        return;
    };
    let _alone = gpu_alone();
    let cpu = Device::flex().autodiff();
    let value = |i: usize, salt: usize| ((i * 7919 + salt) % 1013) as f32 / 400.0 - 1.2;
    for (batch, seq, heads, d_head, start) in [(1, 1, 1, 2, 0), (2, 9, 4, 16, 7), (1, 70, 2, 32, 0)]
    {
        let width = heads * d_head;
        let run = |device: &Device, ours: bool| {
            let data = |len: usize, salt| (0..len).map(|i| value(i, salt)).collect::<Vec<f32>>();
            let x = Tensor::<3>::from_data(
                TensorData::new(data(batch * seq * width, 1), [batch, seq, width]),
                device,
            )
            .require_grad();
            let weight = Tensor::<4>::from_data(
                TensorData::new(data(batch * seq * width, 2), [batch, heads, seq, d_head]),
                device,
            );
            let rope = burn::nn::RotaryEncodingConfig::new(start + seq, d_head).init(device);
            let y = if ours {
                rotary_heads(x.clone(), rope.freq_complex.clone(), start)
            } else {
                let heads_of = x
                    .clone()
                    .reshape([batch, seq, heads, d_head])
                    .swap_dims(1, 2);
                rope.apply(heads_of, start)
            };
            let out = common::values(y.clone());
            let grads = (y * weight).sum().backward();
            (out, common::values(x.grad(&grads).unwrap()))
        };
        let want = run(&cpu, false);
        // The once-per-device check runs the kernel too: done before counting.
        run(&gpu, true);
        let mut got = None;
        let counts = launched(|| got = Some(run(&gpu, true)));
        let what = format!("[{batch}, {seq}] of {heads} x {d_head} from {start}");
        assert!(
            counts.get("remem::rotary") == Some(&2) && remem::ops::fallbacks().is_empty(),
            "{what}: the kernel did not run once each way ({counts:?}; fallbacks {:?})",
            remem::ops::fallbacks()
        );
        let (out, grad) = got.unwrap();
        for (name, got, want) in [("turn", out, want.0), ("gradient", grad, want.1)] {
            let diff = common::max_diff(&got, &want);
            assert!(diff < 1e-5, "{what}: the {name} differs by {diff}");
        }
    }
}

/// The WGSL sum of squares (`shaders/sum_squares.wgsl`), which gradient clipping runs over
/// the parameters seven at a time and then six with the running total, gives the CPU's total for tensors smaller and larger than its
/// workgroup, in groups full and partly padded, a transposed one and a slice of columns (both
/// read in place, through their strides) among them. The kernel must be what ran.
#[test]
fn the_wgsl_sum_of_squares_matches_the_cpu() {
    let Some(gpu) = common::wgpu_device() else {
        return;
    };
    let _alone = gpu_alone();
    let sizes = [1, 63, 64, 1000, 70_001, 7, 128];
    for count in [1, 5, sizes.len()] {
        let run = |device: &Device| {
            let mut sum = remem::ops::sum_squares::SumSquares::new();
            for &n in &sizes[..count] {
                let xs: Vec<f32> = (0..n)
                    .map(|i| ((i * 7919 + n) % 1013) as f32 / 500.0 - 1.0)
                    .collect();
                sum.add(Tensor::<1>::from_data(TensorData::new(xs, [n]), device));
            }
            let grid = |rows: usize, columns: usize| {
                let xs: Vec<f32> = (0..rows * columns)
                    .map(|i| ((i * 31) % 101) as f32 / 50.0 - 1.0)
                    .collect();
                Tensor::<2>::from_data(TensorData::new(xs, [rows, columns]), device)
            };
            sum.add(grid(30, 50).transpose());
            sum.add(grid(40, 128).slice(s![.., 64..128]));
            common::values(sum.total().unwrap())[0]
        };
        let want = run(&Device::flex());
        // The once-per-device check runs the kernel too: done before counting.
        run(&gpu);
        let mut got = None;
        let counts = launched(|| got = Some(run(&gpu)));
        let got = got.unwrap();
        let groups = remem::ops::sum_squares::operations(count + 2);
        assert!(
            counts.get("remem::sum_squares") == Some(&groups) && remem::ops::fallbacks().is_empty(),
            "{count} tensors: the kernel did not run {groups} times ({counts:?}; fallbacks {:?})",
            remem::ops::fallbacks()
        );
        let diff = (got - want).abs() / want.abs();
        assert!(
            diff < 1e-4,
            "{count} tensors: {got} against {want} (relative {diff})"
        );
        assert!(want > 0.0, "{count} tensors: nothing added");
    }
}

/// The exact match training counts is the fraction of rows with an answer whose answer tokens
/// the model predicts all right: on flex, which scores segment by segment, and on wgpu, which
/// scores every segment at once; in both layouts.
#[test]
fn training_counts_the_rows_answered_exactly() {
    let mut devices = vec![Device::flex()];
    devices.extend(common::wgpu_device());
    let _shared = gpu_shared();
    for device in devices {
        for layout in [Layout::Decoder, Layout::Encoder] {
            let cfg = config(ModelKind::Rmt, layout);
            let train = device.clone().autodiff();
            let model = Model::new(&cfg, 5, &train);
            let task = Task::new(TaskConfig::default(), cfg.segment_len).unwrap();
            let data = TaskDataset::new(task.clone(), 3, 6);
            let items: Vec<_> = (0..6).map(|i| data.sample(i)).collect();
            let batcher = SegmentBatcher::new(cfg.layout, task.input_len());
            let predicted = forward_batch(
                &model.valid(),
                &batcher.batch(items.clone(), &device),
                cfg.segment_len,
            )
            .predictions();
            // Every row's answer becomes the model's own prediction; rows 1, 4 and 5 then get
            // one answer token wrong, and row 2 has no answer at all.
            let mut rows: Vec<Rows> = items.iter().map(|s| batcher.rows(s)).collect();
            let mut answer_tokens = 0;
            for (i, row) in rows.iter_mut().enumerate() {
                let answers: Vec<usize> =
                    (0..row.answer.len()).filter(|&p| row.answer[p]).collect();
                assert!(answers.len() > 1, "a copy answer has several tokens");
                for &p in &answers {
                    row.targets[p] = predicted[i][p];
                }
                if [1, 4, 5].contains(&i) {
                    let p = answers[answers.len() / 2];
                    row.targets[p] = (row.targets[p] + 1) % cfg.vocab_size as u32;
                }
                match i {
                    2 => row.answer.fill(false),
                    _ => answer_tokens += answers.len(),
                }
            }
            let batch = Batch::from_rows(&rows, &train);
            let stats = forward_batch_counting_rows(&model, &batch, cfg.segment_len, true).stats();
            let at = format!("{device:?}, {layout:?}");
            assert_eq!(stats.exact_match, Some(2.0 / 5.0), "{at}");
            // Row by row: 0 and 3 right, 1, 4 and 5 one token off, 2 without an answer.
            assert_eq!(stats.rows, [true, false, false, true, false, false], "{at}");
            assert_eq!(stats.correct, (answer_tokens - 3) as f64, "{at}");
            let uncounted = forward_batch(&model, &batch, cfg.segment_len).stats();
            assert_eq!(uncounted.exact_match, None);
            assert!(uncounted.rows.is_empty());
            assert_eq!(uncounted.correct, stats.correct);
        }
    }
}
