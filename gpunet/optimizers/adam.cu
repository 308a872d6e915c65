extern "C" {

// Keras Adam, line for line the NumPy twin Adam.update_core_cpu (adam.py). Every constant comes from the
// host, as the twin's float32 scalars (Adam.constants): c1 = 1 - beta_1 and c2 = 1 - beta_2 (computed in
// double, then rounded: not 1.0f - beta in float), eps, alpha_t = lr*sqrt(1 - beta_2^t)/(1 - beta_1^t).
//   w = w - w*decay                  decay != 0 only (Keras' decoupled weight decay, decay = weight_decay*lr)
//   m = m + (g - m)*c1
//   v = v + (g*g - v)*c2
//   v_hat = max(v_hat, v)            amsgrad (v_hat not null), np.maximum: v_hat if v_hat > v or v_hat is
//                                    NaN, else v; the step then uses v_hat (the slot v keeps the new v)
//   w = w - (m / (sqrt(v) + eps))*alpha_t
// Each operation is rounded on its own (__f*_rn: no FMA contraction), as NumPy rounds each ufunc.
// halt (may be null): skip the update when *halt != 0 (the loss guard's flag).
__global__ void adam_update(float* w, const float* g, float* m, float* v, float* v_hat, float c1, float c2,
                            float eps, float alpha_t, float decay, long long n, const int* halt) {
    if (halt && *halt) return;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float wi = w[i];
        if (decay != 0.0f) wi = __fsub_rn(wi, __fmul_rn(wi, decay));
        float gi = g[i];
        float mi = __fadd_rn(m[i], __fmul_rn(__fsub_rn(gi, m[i]), c1));
        float vi = __fadd_rn(v[i], __fmul_rn(__fsub_rn(__fmul_rn(gi, gi), v[i]), c2));
        m[i] = mi;
        v[i] = vi;
        if (v_hat) {
            float h = v_hat[i];
            vi = (h > vi || h != h) ? h : vi;
            v_hat[i] = vi;
        }
        w[i] = __fsub_rn(wi, __fmul_rn(__fdiv_rn(mi, __fadd_rn(__fsqrt_rn(vi), eps)), alpha_t));
    }
}

}  // extern "C"
