// affine.wgsl's input layer-normed as it is read: (x - mean) / sqrt(var + epsilon) * gamma +
// beta per row, the statistics in two passes as layer_norm.wgsl takes them (the mean, then the
// variance of the centred values). Four invocations share each of the tile's 64 rows' sums.

@group(0) @binding(6) var<storage, read_write> gamma: array<f32>; // [k]
@group(0) @binding(7) var<storage, read_write> beta: array<f32>;  // [k]

var<workgroup> partial: array<f32, 256>;
var<workgroup> row_mean: array<f32, 64>;
var<workgroup> row_deviation: array<f32, 64>;

// The tile's rows' means and deviations into row_mean and row_deviation: every 4th element's
// partial sum per invocation (`lane`), then each row's first invocation adds its four. Called
// by every invocation (the barriers need uniform control flow).
fn prologue(t: u32, row0: u32, rows: u32, k: u32) {
    let lane = t % 4u;
    let local = t / 4u;
    let row = row0 + local;
    let live = row < rows;
    var sum = 0.0;
    if live {
        for (var i = lane; i < k; i += 4u) {
            sum += x[row * k + i];
        }
    }
    partial[t] = sum;
    workgroupBarrier();
    if lane == 0u {
        row_mean[local] = (partial[t] + partial[t + 1u] + partial[t + 2u] + partial[t + 3u])
            / f32(k);
    }
    workgroupBarrier();
    let mean = row_mean[local];
    var squares = 0.0;
    if live {
        for (var i = lane; i < k; i += 4u) {
            let c = x[row * k + i] - mean;
            squares += c * c;
        }
    }
    partial[t] = squares;
    workgroupBarrier();
    if lane == 0u {
        let total = partial[t] + partial[t + 1u] + partial[t + 2u] + partial[t + 3u];
        row_deviation[local] = sqrt(total / f32(k) + bitcast<f32>(info[3]));
    }
    workgroupBarrier();
}

fn load_x(row: u32, i: u32, k: u32, local: u32) -> f32 {
    return (x[row * k + i] - row_mean[local]) / row_deviation[local] * gamma[i] + beta[i];
}
