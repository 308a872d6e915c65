extern "C" {

// y = float(x) * scale + offset for uint8 images (Rescaling's integer input), the twin's
// y[...] = x; y *= scale; y += offset (the cast is exact, each operation rounded once: the same bits).
// With add_offset == 0 the addition is left out (the twin adds nothing for an offset of 0.0, so -0.0 stays).
__global__ void rescale_u8(const unsigned char* x, float* y, float scale, float offset, int add_offset, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float v = __fmul_rn((float)x[i], scale);
        y[i] = add_offset ? __fadd_rn(v, offset) : v;
    }
}

}  // extern "C"
