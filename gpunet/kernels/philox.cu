extern "C" {

// Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC 2011), the
// generator of Random123's philox4x32_R(10, ctr, key) and cuRAND's Philox4_32_10: ten rounds of
//   (hi0, lo0) = 0xD2511F53 * c0,  (hi1, lo1) = 0xCD9E8D57 * c2   (32 x 32 -> 64-bit products)
//   c = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)
// with the key bumped by (0x9E3779B9, 0xBB67AE85) between rounds. The NumPy twin is in philox.py.
__device__ __forceinline__ void philox4x32_10(unsigned int c[4], unsigned int k0, unsigned int k1) {
    for (int round = 0; round < 10; ++round) {
        if (round) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        unsigned long long p0 = 0xD2511F53ull * c[0], p1 = 0xCD9E8D57ull * c[2];
        unsigned int hi0 = (unsigned int)(p0 >> 32), lo0 = (unsigned int)p0;
        unsigned int hi1 = (unsigned int)(p1 >> 32), lo1 = (unsigned int)p1;
        c[0] = hi1 ^ c[1] ^ k0;
        c[1] = lo1;
        c[2] = hi0 ^ c[3] ^ k1;
        c[3] = lo0;
    }
}

// Dropout's mask (and, when x and y are given, y = x * mask) for this launch's n elements.
// state: { key (k0 = low 32 bits, k1 = high 32 bits), counter } on the device; it is only read here
// (philox_advance moves the counter on, after this kernel). Element i of the launch is element
// e = counter + offset + i of the stream; e takes word e % 4 of Philox4x32-10(key, (lo32(e / 4), hi32(e / 4), 0, 0)),
// u = (word >> 8) * 2^-24 (the top 24 bits: exactly a float in [0, 1)), and is kept when u >= rate:
// mask = scale (1 / (1 - rate), rounded once on the host), else 0; y = x * mask, one rounded product.
// One thread per Philox block (4 elements); x and y may be null (the mask only), y may be x.
__global__ void dropout_mask(const unsigned long long* state, const float* x, float* y, float* mask, long long n,
                             long long offset, float rate, float scale) {
    if (n <= 0)
        return;
    const unsigned long long first = state[1] + (unsigned long long)offset, end = first + (unsigned long long)n;
    const unsigned long long block0 = first >> 2, blocks = ((end - 1) >> 2) - block0 + 1;
    const unsigned int k0 = (unsigned int)state[0], k1 = (unsigned int)(state[0] >> 32);
    for (unsigned long long j = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; j < blocks;
         j += (unsigned long long)gridDim.x * blockDim.x) {
        const unsigned long long block = block0 + j;
        unsigned int c[4] = {(unsigned int)block, (unsigned int)(block >> 32), 0u, 0u};
        philox4x32_10(c, k0, k1);
        for (int w = 0; w < 4; ++w) {
            const unsigned long long e = (block << 2) + w;
            if (e < first || e >= end)
                continue;
            const long long i = (long long)(e - first);
            const float u = (float)(c[w] >> 8) * 5.9604644775390625e-08f;      // 2^-24: exact
            const float m = u >= rate ? scale : 0.0f;
            mask[i] = m;
            if (x)
                y[i] = __fmul_rn(x[i], m);
        }
    }
}

// After a draw: the counter moves on by the draw's global size (every rank alike), on the device, so
// that a replayed CUDA graph draws fresh masks. One thread acts, so any launch shape works.
__global__ void philox_advance(unsigned long long* state, long long step) {
    if (blockIdx.x == 0 && threadIdx.x == 0)
        state[1] += (unsigned long long)step;
}

}  // extern "C"
