extern "C" {

// Keras SGD: m = mu*m - lr*g; w += m (nesterov: w += mu*m - lr*g). mu == 0: w -= lr*g, m untouched.
// halt (may be null): skip the update when *halt != 0 (the loss guard's flag, see gpunet/kernels/guard.cu).
__global__ void sgd_update(float* w, const float* g, float* m, float lr, float mu, int nesterov, long long n,
                           const int* halt) {
    if (halt && *halt) return;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        if (mu == 0.0f) { w[i] -= lr * g[i]; continue; }
        float mi = mu * m[i] - lr * g[i];
        m[i] = mi;
        w[i] += nesterov ? mu * mi - lr * g[i] : mi;
    }
}

}  // extern "C"
