extern "C" {

// Keras Adam: m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2); w -= alpha_t * m / (sqrt(v) + eps).
// halt (may be null): skip the update when *halt != 0 (the loss guard's flag).
__global__ void adam_update(float* w, const float* g, float* m, float* v, float alpha_t, float b1, float b2,
                            float eps, long long n, const int* halt) {
    if (halt && *halt) return;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float gi = g[i];
        float mi = m[i] + (gi - m[i]) * (1.0f - b1);
        float vi = v[i] + (gi * gi - v[i]) * (1.0f - b2);
        m[i] = mi; v[i] = vi;
        w[i] -= alpha_t * mi / (sqrtf(vi) + eps);
    }
}

}  // extern "C"
