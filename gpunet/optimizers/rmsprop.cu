extern "C" {

// Keras RMSprop, line for line the NumPy twin RMSprop.update_core_cpu (rmsprop.py). The velocity is
// stored scaled, u = v/(1 - rho). Every constant comes from the host, as the twin's float32 scalars
// (RMSprop.constants): rho, one_minus_rho (1 - rho computed in double, then rounded), eps, lr, mu, and for
// the plain Keras form c = (1 - rho)/lr^2, e2 = eps/lr^2. fast (the plain form) and eps_inside are the
// host's decisions; a (centered) and mom (momentum) are null when the optimizer has no such slot.
//   w = w - w*decay                  decay != 0 only (Keras' decoupled weight decay, decay = weight_decay*lr)
//   u = u*rho + g*g
//   w = w - g / sqrt(u*c + e2)       fast: done
//   v = u*one_minus_rho
//   a = a*rho + g*one_minus_rho      centered
//   v = v - a*a                      centered
//   s = g / sqrt(v + eps)            eps_inside (Keras)
//   s = g / (sqrt(v) + eps)          !eps_inside (PyTorch)
//   s = s*lr
//   mom = mom*mu + s; s = mom        momentum
//   w = w - s
// Each operation is rounded on its own (__f*_rn: no FMA contraction), as NumPy rounds each ufunc.
// halt (may be null): skip the update when *halt != 0 (the loss guard's flag).

// The first lines of both forms: w decayed, and u = u*rho + g*g (stored).
__device__ __forceinline__ float decayed(float wi, float decay) {
    return decay != 0.0f ? __fsub_rn(wi, __fmul_rn(wi, decay)) : wi;
}
__device__ __forceinline__ float update_velocity(float* u, long long i, float gi, float rho) {
    float ui = __fadd_rn(__fmul_rn(u[i], rho), __fmul_rn(gi, gi));
    u[i] = ui;
    return ui;
}

__global__ void rmsprop_update(float* w, const float* g, float* u, float* a, float* mom, float rho,
                               float one_minus_rho, float eps, float lr, float mu, float c, float e2, int fast,
                               int eps_inside, float decay, long long n, const int* halt) {
    if (halt && *halt) return;
    if (fast) {     // a loop of its own (the same arithmetic): the CPU build vectorizes it
        for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
            float wi = decayed(w[i], decay), gi = g[i], ui = update_velocity(u, i, gi, rho);
            w[i] = __fsub_rn(wi, __fdiv_rn(gi, __fsqrt_rn(__fadd_rn(__fmul_rn(ui, c), e2))));
        }
        return;
    }
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float wi = decayed(w[i], decay), gi = g[i], ui = update_velocity(u, i, gi, rho);
        float vi = __fmul_rn(ui, one_minus_rho);
        if (a) {
            float ai = __fadd_rn(__fmul_rn(a[i], rho), __fmul_rn(gi, one_minus_rho));
            a[i] = ai;
            vi = __fsub_rn(vi, __fmul_rn(ai, ai));
        }
        float den = eps_inside ? __fsqrt_rn(__fadd_rn(vi, eps)) : __fadd_rn(__fsqrt_rn(vi), eps);
        float s = __fmul_rn(__fdiv_rn(gi, den), lr);
        if (mom) {
            s = __fadd_rn(__fmul_rn(mom[i], mu), s);
            mom[i] = s;
        }
        w[i] = __fsub_rn(wi, s);
    }
}

}  // extern "C"
