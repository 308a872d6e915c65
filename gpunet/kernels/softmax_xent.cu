extern "C" {

// One thread per row: probs = softmax(z[row]), row_loss = -sum(y * log_softmax(z[row])).
// labels: one-hot/probabilities (float, rows x cols) when sparse == 0, else class indices (int64).
__global__ void softmax_xent_fwd(const float* z, const float* y, const long long* labels, float* probs,
                                 float* row_loss, long long rows, long long cols, int sparse) {
    for (long long r = blockIdx.x * (long long)blockDim.x + threadIdx.x; r < rows; r += (long long)gridDim.x * blockDim.x) {
        const float* zr = z + r * cols;
        float m = zr[0];
        for (long long c = 1; c < cols; ++c) m = fmaxf(m, zr[c]);
        float s = 0.0f;
        for (long long c = 0; c < cols; ++c) s += expf(zr[c] - m);
        float lse = logf(s);
        float loss = 0.0f;
        for (long long c = 0; c < cols; ++c) {
            float lp = zr[c] - m - lse;
            probs[r * cols + c] = expf(lp);
            if (!sparse) loss -= y[r * cols + c] * lp;
        }
        if (sparse) loss = -(zr[labels[r]] - m - lse);
        row_loss[r] = loss;
    }
}

// dz = (probs - y) * g[0] / rows [* w[row]]: the exact softmax-cross-entropy backward; w (per-row
// sample weights) may be null.
__global__ void softmax_xent_bwd(const float* probs, const float* y, const long long* labels, const float* g,
                                 const float* w, float* dz, long long rows, long long cols, int sparse) {
    long long n = rows * cols;
    float scale = g[0] / (float)rows;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float t = sparse ? (labels[i / cols] == i % cols ? 1.0f : 0.0f) : y[i];
        float d = (probs[i] - t) * scale;
        dz[i] = w ? d * w[i / cols] : d;
    }
}

}  // extern "C"
