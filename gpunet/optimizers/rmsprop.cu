extern "C" {

// Keras RMSprop: v = rho*v + (1-rho)*g^2; [a = rho*a + (1-rho)*g; d = v - a^2]; step = lr*g/sqrt(d + eps)
// (eps_inside == 0: lr*g/(sqrt(d) + eps), PyTorch's form); momentum: mom = mu*mom + step; w -= mom.
// The velocity is stored scaled, u = v/(1-rho): u = rho*u + g^2. fast != 0 (plain Keras form): step =
// g/sqrt(u*c + e2) with c = (1-rho)/lr^2, e2 = eps/lr^2 computed on the host, as the NumPy twin does.
// decay != 0: Keras' decoupled weight decay first, w -= w*decay (decay = weight_decay*lr; no FMA, as the twin).
// halt (may be null): skip the update when *halt != 0 (the loss guard's flag).
__global__ void rmsprop_update(float* w, const float* g, float* u, float* a, float* mom, float lr, float rho,
                               float eps, float mu, int eps_inside, float c, float e2, int fast, float decay,
                               long long n, const int* halt) {
    if (halt && *halt) return;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float gi = g[i];
        float ui = __fadd_rn(__fmul_rn(u[i], rho), __fmul_rn(gi, gi));   // no FMA: round as the twin does
        u[i] = ui;
        float step;
        if (fast) {
            step = gi / sqrtf(__fadd_rn(__fmul_rn(ui, c), e2));
        } else {
            float vi = (1.0f - rho) * ui;
            if (a) { float ai = rho * a[i] + (1.0f - rho) * gi; a[i] = ai; vi -= ai * ai; }
            step = eps_inside ? lr * gi / sqrtf(vi + eps) : lr * gi / (sqrtf(vi) + eps);
            if (mom) { step += mu * mom[i]; mom[i] = step; }
        }
        float wi = w[i];
        if (decay != 0.0f) wi = __fsub_rn(wi, __fmul_rn(wi, decay));
        w[i] = wi - step;
    }
}

}  // extern "C"
