extern "C" {

// Convolution and pooling on channels-last float32 arrays: im2col/col2im and max/average pooling,
// forward and backward. The NumPy twins are in conv.py, the launches in conv_cuda.py; each kernel does
// what its twin does, in the same order, each float operation rounded on its own (__fadd_rn,
// __fdiv_rn: no FMA), so kernel and twin give the same bits (CuPy's -ftz=true: subnormals as zero, as
// the twin run under tests/subnormals.flushing).
//
// (A NaN's sign bit is not part of that contract: where two NaNs meet in a sum, which one survives is
// the hardware's choice, and NumPy's own vectorized loops differ from column to column.)
//
// Every kernel is a grid-stride loop with one output element per thread (no shared memory, no atomics:
// a gradient element is summed by the one thread that owns it, in a fixed order). Indices are long long.
// Geometry: x (n, H, W, C); window (oh, ow) covers rows oh*sh - pt .. oh*sh - pt + kh - 1 and columns
// ow*sw - pl .. ow*sw - pl + kw - 1 of x; positions outside x are padding (0 for im2col, skipped by the
// pooling kernels). The outputs are (n, oh_n, ow_n, C), im2col's (n*oh_n*ow_n, kh*kw*C).

// v with a subnormal read as +0, as a flushing unit reads it: comparisons then agree whether or not the
// compiler flushes them (see dense.cu). The value stored is always the input's own bits.
// The CPU build (host.py) keeps IEEE subnormals, as the twins do there: v itself.
#ifdef GPUNET_IEEE_SUBNORMALS
__device__ __forceinline__ float flushed(float v) { return v; }
#else
__device__ __forceinline__ float flushed(float v) {
    return (__float_as_int(v) & 0x7fffffff) < 0x00800000 ? 0.0f : v;
}
#endif

// The ReLU gradient's gate on a ReLU output y, as dense.cu's relu_bwd computes it (g * gate): 1 where
// y > 0 (a subnormal counts as 0 on the GPU, whose unit flushes it; as itself on the CPU build), else 0.
#ifdef GPUNET_IEEE_SUBNORMALS
__device__ __forceinline__ float relu_gate(float y) { return y > 0.0f ? 1.0f : 0.0f; }
#else
__device__ __forceinline__ float relu_gate(float y) {
    int bits = __float_as_int(y);
    return bits >= 0x00800000 && bits <= 0x7f800000 ? 1.0f : 0.0f;
}
#endif

// The windows lo..hi (of out_n, size k, stride s) that cover padded position r >= 0 along one axis:
// window o covers r when 0 <= r - o*s < k. lo > hi when none does.
__device__ __forceinline__ void covering(long long r, long long k, long long s, long long out_n, long long* lo,
                                         long long* hi) {
    *lo = r - k + 1 <= 0 ? 0 : (r - k + s) / s;
    *hi = r / s < out_n - 1 ? r / s : out_n - 1;
}

// cols[(i*oh_n + oh)*ow_n + ow, (dy*kw + dx)*C + c] = x[i, oh*sh + dy - pt, ow*sw + dx - pl, c], or +0
// outside x. A copy: the bits of x.
__global__ void im2col(const float* x, float* cols, long long n, long long H, long long W, long long C,
                       long long kh, long long kw, long long sh, long long sw, long long pt, long long pl,
                       long long oh_n, long long ow_n) {
    long long kc = kw * C, row_len = kh * kc, total = n * oh_n * ow_n * row_len;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
        long long row = i / row_len, k = i - row * row_len;
        long long dy = k / kc, rest = k - dy * kc;
        long long dx = rest / C, c = rest - dx * C;
        long long t = row / ow_n, ow = row - t * ow_n;
        long long b = t / oh_n, oh = t - b * oh_n;
        long long y = oh * sh + dy - pt, xx = ow * sw + dx - pl;
        cols[i] = (y >= 0 && y < H && xx >= 0 && xx < W) ? x[((b * H + y) * W + xx) * C + c] : 0.0f;
    }
}

// The adjoint of im2col: x[i, y, xx, c] = the sum of every cols entry that im2col copies it to. One thread
// per element of x: acc = +0, then for dy ascending, for dx ascending, the one window (if any) that puts
// it at offset (dy, dx): acc = acc + cols[...]. (The twin adds strided slices offset by offset.)
__global__ void col2im(const float* cols, float* x, long long n, long long H, long long W, long long C,
                       long long kh, long long kw, long long sh, long long sw, long long pt, long long pl,
                       long long oh_n, long long ow_n) {
    long long row_len = kh * kw * C, total = n * H * W * C;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
        long long t = i / C, c = i - t * C;
        long long t2 = t / W, xx = t - t2 * W;
        long long b = t2 / H, y = t2 - b * H;
        long long ry = y + pt, rx = xx + pl;            // >= 0: offset dy fits window oh when ry - dy == oh*sh
        float acc = 0.0f;
        for (long long dy = ry % sh; dy < kh && dy <= ry; dy += sh) {
            long long oh = (ry - dy) / sh;
            if (oh >= oh_n) continue;
            for (long long dx = rx % sw; dx < kw && dx <= rx; dx += sw) {
                long long ow = (rx - dx) / sw;
                if (ow >= ow_n) continue;
                acc = __fadd_rn(acc, cols[((b * oh_n + oh) * ow_n + ow) * row_len + (dy * kw + dx) * C + c]);
            }
        }
        x[i] = acc;
    }
}

// y[i, oh, ow, c] = the largest x over the window's positions inside x, arg = its offset dy*pw + dx: the
// window's first position inside x starts the search and a later one replaces it only when strictly
// greater (v > best, the twin's rule, TensorFlow's too). So the first maximum in row-major order wins a
// tie (-0 and +0 tie, a subnormal ties with 0); a NaN is kept when it comes first, and skipped otherwise.
// y is a copy of x's element. A window with no position inside x (the launcher refuses such geometry)
// would give -inf and arg -1, as the twin.
__global__ void max_pool_fwd(const float* x, float* y, int* arg, long long n, long long H, long long W,
                             long long C, long long ph, long long pw, long long sh, long long sw, long long pt,
                             long long pl, long long oh_n, long long ow_n) {
    long long total = n * oh_n * ow_n * C;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
        long long t = i / C, c = i - t * C;
        long long t2 = t / ow_n, ow = t - t2 * ow_n;
        long long b = t2 / oh_n, oh = t2 - b * oh_n;
        long long y0 = oh * sh - pt, x0 = ow * sw - pl;
        float best = __int_as_float(0xff800000);      // -inf
        int best_k = -1;
        for (long long dy = 0; dy < ph; ++dy) {
            long long yy = y0 + dy;
            if (yy < 0 || yy >= H) continue;
            for (long long dx = 0; dx < pw; ++dx) {
                long long xx = x0 + dx;
                if (xx < 0 || xx >= W) continue;
                float v = x[((b * H + yy) * W + xx) * C + c];
                if (best_k < 0 || flushed(v) > flushed(best)) {
                    best = v;
                    best_k = (int)(dy * pw + dx);
                }
            }
        }
        y[i] = best;
        arg[i] = best_k;
    }
}

// gx[i, yy, xx, c] = the sum of gy over the windows whose arg points at this element: one thread per
// element of x, acc = +0, then the windows covering it with oh ascending, then ow ascending. gate (may be
// null): x as the output of a ReLU, whose backward is applied in the same pass: gx = acc * relu_gate(gate).
__global__ void max_pool_bwd(const float* gy, const int* arg, const float* gate, float* gx, long long n, long long H,
                             long long W, long long C, long long ph, long long pw, long long sh, long long sw,
                             long long pt, long long pl, long long oh_n, long long ow_n) {
    long long total = n * H * W * C;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
        long long t = i / C, c = i - t * C;
        long long t2 = t / W, xx = t - t2 * W;
        long long b = t2 / H, yy = t2 - b * H;
        long long ry = yy + pt, rx = xx + pl;           // window oh covers yy when 0 <= ry - oh*sh < ph
        long long oh_lo, oh_hi, ow_lo, ow_hi;
        covering(ry, ph, sh, oh_n, &oh_lo, &oh_hi);
        covering(rx, pw, sw, ow_n, &ow_lo, &ow_hi);
        float acc = 0.0f;
        for (long long oh = oh_lo; oh <= oh_hi; ++oh) {
            for (long long ow = ow_lo; ow <= ow_hi; ++ow) {
                long long j = ((b * oh_n + oh) * ow_n + ow) * C + c;
                if (arg[j] == (ry - oh * sh) * pw + (rx - ow * sw)) acc = __fadd_rn(acc, gy[j]);
            }
        }
        gx[i] = gate ? __fmul_rn(acc, relu_gate(gate[i])) : acc;
    }
}

// The number of positions of window (oh, ow) inside x (the average's divisor), as a float.
__device__ __forceinline__ float window_count(long long y0, long long x0, long long H, long long W, long long ph,
                                              long long pw) {
    long long rows = (y0 + ph < H ? y0 + ph : H) - (y0 > 0 ? y0 : 0);
    long long cols = (x0 + pw < W ? x0 + pw : W) - (x0 > 0 ? x0 : 0);
    return (float)(rows * cols);
}

// y[i, oh, ow, c] = (the sum of x over the window's positions inside x, row-major from +0) / their count:
// one __fdiv_rn (padding is not counted, as Keras/TensorFlow's 'same' average pooling).
__global__ void avg_pool_fwd(const float* x, float* y, long long n, long long H, long long W, long long C,
                             long long ph, long long pw, long long sh, long long sw, long long pt, long long pl,
                             long long oh_n, long long ow_n) {
    long long total = n * oh_n * ow_n * C;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
        long long t = i / C, c = i - t * C;
        long long t2 = t / ow_n, ow = t - t2 * ow_n;
        long long b = t2 / oh_n, oh = t2 - b * oh_n;
        long long y0 = oh * sh - pt, x0 = ow * sw - pl;
        float s = 0.0f;
        for (long long dy = 0; dy < ph; ++dy) {
            long long yy = y0 + dy;
            if (yy < 0 || yy >= H) continue;
            for (long long dx = 0; dx < pw; ++dx) {
                long long xx = x0 + dx;
                if (xx < 0 || xx >= W) continue;
                s = __fadd_rn(s, x[((b * H + yy) * W + xx) * C + c]);
            }
        }
        y[i] = __fdiv_rn(s, window_count(y0, x0, H, W, ph, pw));
    }
}

// gx[i, yy, xx, c] = the sum over the windows covering it (oh ascending, then ow ascending, from +0) of
// gy[window] / count(window), each quotient one __fdiv_rn.
__global__ void avg_pool_bwd(const float* gy, float* gx, long long n, long long H, long long W, long long C,
                             long long ph, long long pw, long long sh, long long sw, long long pt, long long pl,
                             long long oh_n, long long ow_n) {
    long long total = n * H * W * C;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
        long long t = i / C, c = i - t * C;
        long long t2 = t / W, xx = t - t2 * W;
        long long b = t2 / H, yy = t2 - b * H;
        long long ry = yy + pt, rx = xx + pl;
        long long oh_lo, oh_hi, ow_lo, ow_hi;
        covering(ry, ph, sh, oh_n, &oh_lo, &oh_hi);
        covering(rx, pw, sw, ow_n, &ow_lo, &ow_hi);
        float acc = 0.0f;
        for (long long oh = oh_lo; oh <= oh_hi; ++oh) {
            for (long long ow = ow_lo; ow <= ow_hi; ++ow) {
                float count = window_count(oh * sh - pt, ow * sw - pl, H, W, ph, pw);
                acc = __fadd_rn(acc, __fdiv_rn(gy[((b * oh_n + oh) * ow_n + ow) * C + c], count));
            }
        }
        gx[i] = acc;
    }
}

// ---------------------------------------------------------------------------------------------------
// The same six operations shaped for a CPU (host.py launches these, not the ones above, on NumPy arrays):
// one loop iteration per pixel with the channels innermost, so each inner loop runs over contiguous
// memory and the compiler vectorizes it (the kernels above spend several 64-bit divisions per element).
// Each element gets the same operations in the same order as above, so the same bits. Valid CUDA too,
// but uncoalesced on a GPU (neighbouring threads C floats apart): the GPU runs the kernels above.

// im2col: row r = (b, oh, ow) of cols, offset (dy, dx) by offset; a window row inside x is one copy of
// kw*C contiguous floats.
__global__ void im2col_px(const float* __restrict__ x, float* __restrict__ cols, long long n, long long H,
                          long long W, long long C, long long kh, long long kw, long long sh, long long sw,
                          long long pt, long long pl, long long oh_n, long long ow_n) {
    long long kc = kw * C, row_len = kh * kc, rows = n * oh_n * ow_n;
    for (long long r = blockIdx.x * (long long)blockDim.x + threadIdx.x; r < rows; r += (long long)gridDim.x * blockDim.x) {
        long long t = r / ow_n, ow = r - t * ow_n;
        long long b = t / oh_n, oh = t - b * oh_n;
        long long x0 = ow * sw - pl;
        for (long long dy = 0; dy < kh; ++dy) {
            float* __restrict__ out = cols + r * row_len + dy * kc;
            long long y = oh * sh + dy - pt;
            if (y < 0 || y >= H) {
                for (long long k = 0; k < kc; ++k) out[k] = 0.0f;
                continue;
            }
            const float* __restrict__ line = x + (b * H + y) * W * C;
            if (x0 >= 0 && x0 + kw <= W) {
                for (long long k = 0; k < kc; ++k) out[k] = line[x0 * C + k];
                continue;
            }
            for (long long dx = 0; dx < kw; ++dx) {
                long long xx = x0 + dx;
                bool inside = xx >= 0 && xx < W;
                for (long long c = 0; c < C; ++c) out[dx * C + c] = inside ? line[xx * C + c] : 0.0f;
            }
        }
    }
}

// col2im: pixel p = (b, y, xx) of x, all channels at once: +0, then the cols entries of offsets (dy, dx)
// in row-major order (col2im's order).
__global__ void col2im_px(const float* __restrict__ cols, float* __restrict__ x, long long n, long long H,
                          long long W, long long C, long long kh, long long kw, long long sh, long long sw,
                          long long pt, long long pl, long long oh_n, long long ow_n) {
    long long row_len = kh * kw * C, pixels = n * H * W;
    for (long long p = blockIdx.x * (long long)blockDim.x + threadIdx.x; p < pixels; p += (long long)gridDim.x * blockDim.x) {
        long long t = p / W, xx = p - t * W;
        long long b = t / H, y = t - b * H;
        long long ry = y + pt, rx = xx + pl;
        float* __restrict__ acc = x + p * C;
        for (long long c = 0; c < C; ++c) acc[c] = 0.0f;
        for (long long dy = ry % sh; dy < kh && dy <= ry; dy += sh) {
            long long oh = (ry - dy) / sh;
            if (oh >= oh_n) continue;
            for (long long dx = rx % sw; dx < kw && dx <= rx; dx += sw) {
                long long ow = (rx - dx) / sw;
                if (ow >= ow_n) continue;
                const float* __restrict__ g = cols + ((b * oh_n + oh) * ow_n + ow) * row_len + (dy * kw + dx) * C;
                for (long long c = 0; c < C; ++c) acc[c] = __fadd_rn(acc[c], g[c]);
            }
        }
    }
}

// max_pool_fwd: output pixel p = (b, oh, ow): its first position inside x taken as it is, each later
// one replacing channel c's maximum only when strictly greater (max_pool_fwd's rule).
__global__ void max_pool_fwd_px(const float* __restrict__ x, float* __restrict__ y, int* __restrict__ arg,
                                long long n, long long H, long long W, long long C, long long ph, long long pw,
                                long long sh, long long sw, long long pt, long long pl, long long oh_n,
                                long long ow_n) {
    long long pixels = n * oh_n * ow_n;
    for (long long p = blockIdx.x * (long long)blockDim.x + threadIdx.x; p < pixels; p += (long long)gridDim.x * blockDim.x) {
        long long t = p / ow_n, ow = p - t * ow_n;
        long long b = t / oh_n, oh = t - b * oh_n;
        long long y0 = oh * sh - pt, x0 = ow * sw - pl;
        float* __restrict__ best = y + p * C;
        int* __restrict__ best_k = arg + p * C;
        bool first = true;
        for (long long dy = 0; dy < ph; ++dy) {
            long long yy = y0 + dy;
            if (yy < 0 || yy >= H) continue;
            for (long long dx = 0; dx < pw; ++dx) {
                long long xx = x0 + dx;
                if (xx < 0 || xx >= W) continue;
                const float* __restrict__ v = x + ((b * H + yy) * W + xx) * C;
                int k = (int)(dy * pw + dx);
                if (first) {
                    for (long long c = 0; c < C; ++c) { best[c] = v[c]; best_k[c] = k; }
                    first = false;
                    continue;
                }
                for (long long c = 0; c < C; ++c) {
                    bool take = flushed(v[c]) > flushed(best[c]);
                    best[c] = take ? v[c] : best[c];
                    best_k[c] = take ? k : best_k[c];
                }
            }
        }
        if (first)
            for (long long c = 0; c < C; ++c) { best[c] = __int_as_float(0xff800000); best_k[c] = -1; }
    }
}

// max_pool_bwd: input pixel p = (b, yy, xx): +0, then gy of each window covering it whose arg points at
// it, windows with oh, then ow, ascending; then the ReLU gate when given.
__global__ void max_pool_bwd_px(const float* __restrict__ gy, const int* __restrict__ arg,
                                const float* __restrict__ gate, float* __restrict__ gx, long long n, long long H,
                                long long W, long long C, long long ph, long long pw, long long sh, long long sw,
                                long long pt, long long pl, long long oh_n, long long ow_n) {
    long long pixels = n * H * W;
    for (long long p = blockIdx.x * (long long)blockDim.x + threadIdx.x; p < pixels; p += (long long)gridDim.x * blockDim.x) {
        long long t = p / W, xx = p - t * W;
        long long b = t / H, yy = t - b * H;
        long long ry = yy + pt, rx = xx + pl;
        long long oh_lo, oh_hi, ow_lo, ow_hi;
        covering(ry, ph, sh, oh_n, &oh_lo, &oh_hi);
        covering(rx, pw, sw, ow_n, &ow_lo, &ow_hi);
        float* __restrict__ acc = gx + p * C;
        for (long long c = 0; c < C; ++c) acc[c] = 0.0f;
        for (long long oh = oh_lo; oh <= oh_hi; ++oh) {
            for (long long ow = ow_lo; ow <= ow_hi; ++ow) {
                long long j = ((b * oh_n + oh) * ow_n + ow) * C;
                int k = (int)((ry - oh * sh) * pw + (rx - ow * sw));
                for (long long c = 0; c < C; ++c) acc[c] = arg[j + c] == k ? __fadd_rn(acc[c], gy[j + c]) : acc[c];
            }
        }
        if (gate)
            for (long long c = 0; c < C; ++c) acc[c] = __fmul_rn(acc[c], relu_gate(gate[p * C + c]));
    }
}

// avg_pool_fwd: output pixel p: the window's positions inside x summed row-major from +0, then one
// division by their count.
__global__ void avg_pool_fwd_px(const float* __restrict__ x, float* __restrict__ y, long long n, long long H,
                                long long W, long long C, long long ph, long long pw, long long sh, long long sw,
                                long long pt, long long pl, long long oh_n, long long ow_n) {
    long long pixels = n * oh_n * ow_n;
    for (long long p = blockIdx.x * (long long)blockDim.x + threadIdx.x; p < pixels; p += (long long)gridDim.x * blockDim.x) {
        long long t = p / ow_n, ow = p - t * ow_n;
        long long b = t / oh_n, oh = t - b * oh_n;
        long long y0 = oh * sh - pt, x0 = ow * sw - pl;
        float* __restrict__ s = y + p * C;
        for (long long c = 0; c < C; ++c) s[c] = 0.0f;
        for (long long dy = 0; dy < ph; ++dy) {
            long long yy = y0 + dy;
            if (yy < 0 || yy >= H) continue;
            for (long long dx = 0; dx < pw; ++dx) {
                long long xx = x0 + dx;
                if (xx < 0 || xx >= W) continue;
                const float* __restrict__ v = x + ((b * H + yy) * W + xx) * C;
                for (long long c = 0; c < C; ++c) s[c] = __fadd_rn(s[c], v[c]);
            }
        }
        float count = window_count(y0, x0, H, W, ph, pw);
        for (long long c = 0; c < C; ++c) s[c] = __fdiv_rn(s[c], count);
    }
}

// avg_pool_bwd: input pixel p: +0, then gy / count of each window covering it, oh, then ow, ascending.
__global__ void avg_pool_bwd_px(const float* __restrict__ gy, float* __restrict__ gx, long long n, long long H,
                                long long W, long long C, long long ph, long long pw, long long sh, long long sw,
                                long long pt, long long pl, long long oh_n, long long ow_n) {
    long long pixels = n * H * W;
    for (long long p = blockIdx.x * (long long)blockDim.x + threadIdx.x; p < pixels; p += (long long)gridDim.x * blockDim.x) {
        long long t = p / W, xx = p - t * W;
        long long b = t / H, yy = t - b * H;
        long long ry = yy + pt, rx = xx + pl;
        long long oh_lo, oh_hi, ow_lo, ow_hi;
        covering(ry, ph, sh, oh_n, &oh_lo, &oh_hi);
        covering(rx, pw, sw, ow_n, &ow_lo, &ow_hi);
        float* __restrict__ acc = gx + p * C;
        for (long long c = 0; c < C; ++c) acc[c] = 0.0f;
        for (long long oh = oh_lo; oh <= oh_hi; ++oh) {
            for (long long ow = ow_lo; ow <= ow_hi; ++ow) {
                const float* __restrict__ g = gy + ((b * oh_n + oh) * ow_n + ow) * C;
                float count = window_count(oh * sh - pt, ow * sw - pl, H, W, ph, pw);
                for (long long c = 0; c < C; ++c) acc[c] = __fadd_rn(acc[c], __fdiv_rn(g[c], count));
            }
        }
    }
}

}  // extern "C"
