// The sizes of a row-wise kernel (layer norm, cross-entropy): rows in info[0], columns in
// info[1], read by the first invocation and shared through workgroupUniformLoad, so the row
// guard and the reductions' barriers after it stay in uniform control flow. The launchers put
// this fragment before the kernel, which declares `info`; every invocation calls it.

var<workgroup> shared_rows: u32;
var<workgroup> shared_columns: u32;

fn row_sizes(t: u32) -> vec2<u32> {
    if t == 0u {
        shared_rows = info[0];
        shared_columns = info[1];
    }
    let rows = workgroupUniformLoad(&shared_rows);
    let columns = workgroupUniformLoad(&shared_columns);
    return vec2<u32>(rows, columns);
}
