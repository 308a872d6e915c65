extern "C" {

// Keras SGD, line for line the NumPy twin SGD.update_core_cpu (sgd.py). Every constant comes from the
// host, as the twin's float32 scalars: lr, mu. has_momentum is the host's decision (momentum != 0 as a
// Python float, so a momentum that rounds to 0.0f still updates the slot m, as the twin does).
//   w = w - w*decay                  decay != 0 only (Keras' decoupled weight decay, decay = weight_decay*lr)
//   s = g*lr
//   w = w - s                        no momentum (m untouched, may be null)
//   m = m*mu - s                     momentum
//   w = w + m                        momentum
//   w = w + (m*mu - s)               nesterov
// Each operation is rounded on its own (__f*_rn: no FMA contraction), as NumPy rounds each ufunc.
// halt (may be null): skip the update when *halt != 0 (the loss guard's flag, see gpunet/kernels/guard.cu).
__global__ void sgd_update(float* w, const float* g, float* m, float lr, float mu, int has_momentum, int nesterov,
                           float decay, long long n, const int* halt) {
    if (halt && *halt) return;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float wi = w[i];
        if (decay != 0.0f) wi = __fsub_rn(wi, __fmul_rn(wi, decay));
        float s = __fmul_rn(g[i], lr);
        if (!has_momentum) {
            w[i] = __fsub_rn(wi, s);
            continue;
        }
        float mi = __fsub_rn(__fmul_rn(m[i], mu), s);
        m[i] = mi;
        w[i] = __fadd_rn(wi, nesterov ? __fsub_rn(__fmul_rn(mi, mu), s) : mi);
    }
}

}  // extern "C"
