extern "C" {

// The NumPy twins are in dense.py; each line below does what its twin does, rounded the same way.
//
// CuPy builds every kernel with -ftz=true: float32 arithmetic reads a subnormal as zero and flushes a
// subnormal result to zero. A comparison may or may not flush, at the compiler's choice (on an H200,
// CuPy 14.2, `y > 0` in relu_bwd did and `v > 0 || v != v` in bias_act_fwd did not), so the tests
// against zero below are written on the bits, as a flushing unit compares: a subnormal is zero.
// The CPU build (gpunet/kernels/host.py) keeps IEEE subnormals, as its NumPy twins do: there a plain v > 0.
#ifdef GPUNET_IEEE_SUBNORMALS
__device__ __forceinline__ bool above_zero(float v) { return v > 0.0f; }
#else
__device__ __forceinline__ bool above_zero(float v) {        // v > 0 with subnormals as 0; NaN: false
    int bits = __float_as_int(v);
    return bits >= 0x00800000 && bits <= 0x7f800000;
}
#endif
__device__ __forceinline__ bool not_a_number(float v) { return (__float_as_int(v) & 0x7fffffff) > 0x7f800000; }

// y = act(z + b[col]), the twin's xp.add(z, b) then xp.maximum(z, 0). b may be null (no bias: z is
// not touched, so -0 stays -0). act: 0 linear, 1 relu = np.maximum(v, 0): v when v > 0 or v is NaN,
// else +0 (-0 gives +0, as NumPy). In place allowed (y == z).
__global__ void bias_act_fwd(const float* z, const float* b, float* y, long long n, long long cols, int act) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float v = b ? __fadd_rn(z[i], b[i % cols]) : z[i];
        y[i] = (act == 1 && !(above_zero(v) || not_a_number(v))) ? 0.0f : v;
    }
}

// bias_act_fwd shaped for a CPU (host.py launches it on NumPy arrays): one loop iteration per row, the
// columns innermost, so b[c] needs no division (i % cols per element stops the compiler vectorizing).
// Each element's operations are bias_act_fwd's: the same bits.
__global__ void bias_act_rows(const float* z, const float* b, float* y, long long rows, long long cols, int act) {
    for (long long r = blockIdx.x * (long long)blockDim.x + threadIdx.x; r < rows; r += (long long)gridDim.x * blockDim.x) {
        const float* zr = z + r * cols;
        float* yr = y + r * cols;
        for (long long c = 0; c < cols; ++c) {
            float v = b ? __fadd_rn(zr[c], b[c]) : zr[c];
            yr[c] = (act == 1 && !(above_zero(v) || not_a_number(v))) ? 0.0f : v;
        }
    }
}

// gz = g * (y > 0), the twin's xp.multiply(g, y > 0): a multiplication, so an inf/NaN gradient gives
// NaN and a negative one -0 where y <= 0 (or y is NaN).
__global__ void relu_bwd(const float* g, const float* y, float* gz, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        gz[i] = __fmul_rn(g[i], above_zero(y[i]) ? 1.0f : 0.0f);
}

// gb[c] = sum over rows of gz[r, c], the bias gradient, into gb (no new array): one thread per column,
// adding the rows in order, as the twin's gz.sum(axis=0) does for a C-ordered gz with cols > 1 (the same
// bits; NumPy sums a single column pairwise, so with cols == 1 they agree within rounding).
__global__ void bias_grad(const float* gz, float* gb, long long rows, long long cols) {
    for (long long c = blockIdx.x * (long long)blockDim.x + threadIdx.x; c < cols; c += (long long)gridDim.x * blockDim.x) {
        float s = 0.0f;
        for (long long r = 0; r < rows; ++r) s = __fadd_rn(s, gz[r * cols + c]);
        gb[c] = s;
    }
}

// gb[c .. c+W) = the sums over rows [0, rows) of those W columns of gz, the rows in order, in W registers
// (W a constant: the compiler keeps acc in vector registers). A template: C++ linkage inside extern "C".
extern "C++" template <int W>
__device__ __forceinline__ void sum_columns(const float* __restrict__ gz, float* __restrict__ gb, long long rows,
                                            long long cols, long long c) {
    float acc[W];
    for (int j = 0; j < W; ++j) acc[j] = 0.0f;
    for (long long r = 0; r < rows; ++r)
        for (int j = 0; j < W; ++j) acc[j] = __fadd_rn(acc[j], gz[r * cols + c + j]);
    for (int j = 0; j < W; ++j) gb[c + j] = acc[j];
}

// bias_grad shaped for a CPU (host.py launches it on NumPy arrays): block b (an OpenMP thread there) owns
// the columns [b*per, (b+1)*per), summed 32, 16 or 1 at a time, each row's piece read contiguously
// (vectorized) instead of a column at a time. Per column the additions of bias_grad: the same bits. Not a
// grid-stride loop: each block handles its own share.
__global__ void bias_grad_cols(const float* __restrict__ gz, float* __restrict__ gb, long long rows, long long cols) {
    long long per = (cols + gridDim.x - 1) / gridDim.x;
    long long c = blockIdx.x * per, c1 = c + per < cols ? c + per : cols;
    for (; c + 32 <= c1; c += 32) sum_columns<32>(gz, gb, rows, cols, c);
    for (; c + 16 <= c1; c += 16) sum_columns<16>(gz, gb, rows, cols, c);
    for (; c < c1; ++c) sum_columns<1>(gz, gb, rows, cols, c);
}

}  // extern "C"
