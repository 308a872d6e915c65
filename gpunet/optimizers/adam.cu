extern "C" {

// Keras Adam: m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2); w -= alpha_t * m / (sqrt(v) + eps).
// v_hat (may be null; amsgrad): v_hat = max(v_hat, v), used in place of v in the step.
// decay != 0: Keras' decoupled weight decay first, w -= w*decay (decay = weight_decay*lr; no FMA, as the twin).
// halt (may be null): skip the update when *halt != 0 (the loss guard's flag).
__global__ void adam_update(float* w, const float* g, float* m, float* v, float* v_hat, float alpha_t, float b1,
                            float b2, float eps, float decay, long long n, const int* halt) {
    if (halt && *halt) return;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float gi = g[i];
        float mi = m[i] + (gi - m[i]) * (1.0f - b1);
        float vi = v[i] + (gi * gi - v[i]) * (1.0f - b2);
        m[i] = mi; v[i] = vi;
        if (v_hat) { float h = v_hat[i]; vi = (vi != vi || vi >= h) ? vi : h; v_hat[i] = vi; }   // NaN-propagating, as np.maximum
        float wi = w[i];
        if (decay != 0.0f) wi = __fsub_rn(wi, __fmul_rn(wi, decay));
        w[i] = wi - alpha_t * mi / (sqrtf(vi) + eps);
    }
}

}  // extern "C"
