// affine.wgsl's input layer-normed as it is read: (x - mean) / sqrt(var + epsilon) * gamma +
// beta per row, the statistics in two passes as layer_norm.wgsl takes them (the mean, then the
// variance of the centred values). The 16 invocations of a tile row share its row's sums.

@group(0) @binding(6) var<storage, read_write> gamma: array<f32>; // [k]
@group(0) @binding(7) var<storage, read_write> beta: array<f32>;  // [k]

var<workgroup> partial: array<f32, 256>;
var<workgroup> row_mean: array<f32, 16>;
var<workgroup> row_deviation: array<f32, 16>;

// Each tile row's mean and deviation into row_mean and row_deviation: every 16th element's
// partial sum per invocation (`lane`, the tile column), then the row's first invocation adds
// its 16. Called by every invocation (the barriers need uniform control flow).
fn prologue(t: u32, row: u32, rows: u32, k: u32) {
    let lane = t % 16u;
    let tile_row = t / 16u;
    let live = row < rows;
    var sum = 0.0;
    if live {
        for (var i = lane; i < k; i += 16u) {
            sum += x[row * k + i];
        }
    }
    partial[t] = sum;
    workgroupBarrier();
    if lane == 0u {
        var total = 0.0;
        for (var j = 0u; j < 16u; j++) {
            total += partial[t + j];
        }
        row_mean[tile_row] = total / f32(k);
    }
    workgroupBarrier();
    let mean = row_mean[tile_row];
    var squares = 0.0;
    if live {
        for (var i = lane; i < k; i += 16u) {
            let c = x[row * k + i] - mean;
            squares += c * c;
        }
    }
    partial[t] = squares;
    workgroupBarrier();
    if lane == 0u {
        var total = 0.0;
        for (var j = 0u; j < 16u; j++) {
            total += partial[t + j];
        }
        row_deviation[tile_row] = sqrt(total / f32(k) + bitcast<f32>(info[3]));
    }
    workgroupBarrier();
}

fn load_x(row: u32, i: u32, k: u32, ty: u32) -> f32 {
    return (x[row * k + i] - row_mean[ty]) / row_deviation[ty] * gamma[i] + beta[i];
}
