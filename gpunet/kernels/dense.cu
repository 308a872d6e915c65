extern "C" {

// y = act(z + b[col]); b may be null (no bias). act: 0 linear, 1 relu. In place allowed (y == z).
__global__ void bias_act_fwd(const float* z, const float* b, float* y, long long n, long long cols, int act) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float v = z[i] + (b ? b[i % cols] : 0.0f);
        y[i] = (act == 1 && v < 0.0f) ? 0.0f : v;
    }
}

// gz = g * (y > 0): the ReLU backward in one pass.
__global__ void relu_bwd(const float* g, const float* y, float* gz, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        gz[i] = y[i] > 0.0f ? g[i] : 0.0f;
}

}  // extern "C"
