extern "C" {

// Keras SGD: m = mu*m - lr*g; w += m (nesterov: w += mu*m - lr*g). mu == 0: w -= lr*g, m untouched.
// decay != 0: Keras' decoupled weight decay first, w -= w*decay (decay = weight_decay*lr; no FMA, as the twin).
// halt (may be null): skip the update when *halt != 0 (the loss guard's flag, see gpunet/kernels/guard.cu).
__global__ void sgd_update(float* w, const float* g, float* m, float lr, float mu, int nesterov, float decay,
                           long long n, const int* halt) {
    if (halt && *halt) return;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float wi = w[i];
        if (decay != 0.0f) wi = __fsub_rn(wi, __fmul_rn(wi, decay));
        if (mu == 0.0f) { w[i] = wi - lr * g[i]; continue; }
        float mi = mu * m[i] - lr * g[i];
        m[i] = mi;
        w[i] = wi + (nesterov ? mu * mi - lr * g[i] : mi);
    }
}

}  // extern "C"
