// affine.wgsl's input as it lies: nothing to prepare, x read in place.

fn prologue(t: u32, row0: u32, rows: u32, k: u32) {}

fn load_x(row: u32, i: u32, k: u32, local: u32) -> f32 {
    return x[row * k + i];
}
