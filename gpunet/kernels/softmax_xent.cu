extern "C" {

// The NumPy twins are in softmax_xent.py. The same operations in the same order; the sums run in
// another order (NumPy sums pairwise) and expf/logf are CUDA's, so the forward matches its twin within
// a few ULP, the backward bit for bit.

#define NAN_F __int_as_float(0x7fc00000)   // NumPy's float32 NaN

// One thread per row: m = max(z), s = sum(exp(z - m)), probs = exp(z - m) / s,
// log_softmax lp = (z - m) - log(s), row_loss = -sum(y * lp) (sparse: -lp[label]).
// labels: one-hot/probabilities (float, rows x cols) when sparse == 0, else class indices (int64);
// a label outside [0, cols) is never read through: its row loss is NaN (the loss guard stops training).
__global__ void softmax_xent_fwd(const float* z, const float* y, const long long* labels, float* probs,
                                 float* row_loss, long long rows, long long cols, int sparse) {
    for (long long r = blockIdx.x * (long long)blockDim.x + threadIdx.x; r < rows; r += (long long)gridDim.x * blockDim.x) {
        const float* zr = z + r * cols;
        float m = zr[0];
        for (long long c = 1; c < cols; ++c) m = fmaxf(m, zr[c]);
        float s = 0.0f;
        for (long long c = 0; c < cols; ++c) s = __fadd_rn(s, expf(__fsub_rn(zr[c], m)));
        float lse = logf(s);
        float loss = 0.0f;
        for (long long c = 0; c < cols; ++c) {
            float lp = __fsub_rn(__fsub_rn(zr[c], m), lse);
            probs[r * cols + c] = __fdiv_rn(expf(__fsub_rn(zr[c], m)), s);
            if (!sparse) loss = __fsub_rn(loss, __fmul_rn(y[r * cols + c], lp));
        }
        if (sparse) {
            long long k = labels[r];
            loss = (k >= 0 && k < cols) ? -__fsub_rn(__fsub_rn(zr[k], m), lse) : NAN_F;
        }
        row_loss[r] = loss;
    }
}

// dz = (probs - y) * (g[0] / rows) [* w[row]]: the exact softmax-cross-entropy backward; w (per-row
// sample weights) may be null. Sparse: y is 1 at the label, 0 elsewhere, NaN on a row whose label lies
// outside [0, cols) (a NaN gradient row, as the twin's).
__global__ void softmax_xent_bwd(const float* probs, const float* y, const long long* labels, const float* g,
                                 const float* w, float* dz, long long rows, long long cols, int sparse) {
    long long n = rows * cols;
    float scale = __fdiv_rn(g[0], (float)rows);
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float t;
        if (sparse) {
            long long k = labels[i / cols];
            t = (k < 0 || k >= cols) ? NAN_F : (k == i % cols ? 1.0f : 0.0f);
        } else {
            t = y[i];
        }
        float d = __fmul_rn(__fsub_rn(probs[i], t), scale);
        dz[i] = w ? __fmul_rn(d, w[i / cols]) : d;
    }
}

// out[0] = (sum over r < n of v[r] [* w[r]]) / divisor: one thread adds the rows in order in double (the
// products of two floats are exact there) and rounds once, as the twin's float64 cumsum. The mean loss of a
// batch (divisor = rows) and a metric's count (divisor 1), written into a device scalar: no new array and
// no host scalar that changes from step to step. w may be null. n == 0 gives 0/divisor (NaN for 0/0).
__global__ void sum_rows(const float* v, const float* w, float* out, long long n, long long divisor) {
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        double s = 0.0;
        for (long long r = 0; r < n; ++r) s += w ? (double)v[r] * (double)w[r] : (double)v[r];
        out[0] = (float)(s / (double)divisor);
    }
}

// The first index of a row's maximum, as NumPy's argmax: a NaN counts as the maximum (the first one wins).
__device__ __forceinline__ long long row_argmax(const float* v, long long cols) {
    long long best = 0;
    float m = v[0];
    for (long long c = 1; c < cols && m == m; ++c)
        if (!(v[c] <= m)) { m = v[c]; best = c; }      // greater, or NaN
    return best;
}

// hits[r] = 1 where the row's argmax of p equals that of the one-hot targets y (or, when y is null, the
// class label labels[r]), else 0: the accuracy's hits in one pass (the twin: argmax, argmax, equal).
__global__ void argmax_hits(const float* p, const float* y, const long long* labels, float* hits, long long rows,
                            long long cols) {
    for (long long r = blockIdx.x * (long long)blockDim.x + threadIdx.x; r < rows; r += (long long)gridDim.x * blockDim.x) {
        long long truth = y ? row_argmax(y + r * cols, cols) : labels[r];
        hits[r] = row_argmax(p + r * cols, cols) == truth ? 1.0f : 0.0f;
    }
}

}  // extern "C"
