extern "C" {

// The step size of step t, on the device: advances the step counter (*t: the steps taken) and writes
// alpha_t = lr*sqrt(1 - beta_2^t)/(1 - beta_1^t), computed in double and rounded once to float, as the
// host computes the twin's (Adam.step_size; adam_step_size's twin in adam.py does the same on NumPy).
// Launched once per optimizer step, before the updates that read *alpha_t: nothing that changes from
// step to step is passed from the host (lr, beta_1, beta_2 are the same every step without a schedule).
__global__ void adam_step_size(long long* t, float* alpha_t, double lr, double beta_1, double beta_2) {
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        long long k = *t + 1;
        *t = k;
        double tk = (double)k;
        alpha_t[0] = (float)(lr * sqrt(1.0 - pow(beta_2, tk)) / (1.0 - pow(beta_1, tk)));
    }
}

// Keras Adam, line for line the NumPy twin Adam.update_core_cpu (adam.py). The constants come from the
// host, as the twin's float32 scalars (Adam.constants): c1 = 1 - beta_1 and c2 = 1 - beta_2 (computed in
// double, then rounded: not 1.0f - beta in float), eps; alpha_t (= lr*sqrt(1 - beta_2^t)/(1 - beta_1^t))
// is read from the device scalar adam_step_size wrote.
//   w = w - w*decay                  decay != 0 only (Keras' decoupled weight decay, decay = weight_decay*lr)
//   m = m + (g - m)*c1
//   v = v + (g*g - v)*c2
//   v_hat = max(v_hat, v)            amsgrad (v_hat not null), np.maximum: v_hat if v_hat > v or v_hat is
//                                    NaN, else v; the step then uses v_hat (the slot v keeps the new v)
//   w = w - (m / (sqrt(v) + eps))*alpha_t
// Each operation is rounded on its own (__f*_rn: no FMA contraction), as NumPy rounds each ufunc.
// halt (may be null): skip the update when *halt != 0 (the loss guard's flag).
__global__ void adam_update(float* w, const float* g, float* m, float* v, float* v_hat, float c1, float c2,
                            float eps, const float* step_size, float decay, long long n, const int* halt) {
    if (halt && *halt) return;
    float alpha_t = *step_size;
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
