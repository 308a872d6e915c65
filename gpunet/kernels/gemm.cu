extern "C" {

// C (m x n) = op(A) @ op(B), float32, each thread one element of C, the k products summed in order
// (no FMA: each product and sum rounded, as the NumPy twin does). op(A) is A (m x k, row stride lda) or,
// with ta, A^T stored as (k x m); likewise B (k x n) or B^T stored as (n x k). For a CUDA-graph step:
// cuBLAS cannot run under stream capture in CuPy (cupy/cupy#6290), this kernel can.
__global__ void gemm_f32(const float* A, const float* B, float* C, long long m, long long n, long long k,
                         long long lda, long long ldb, int ta, int tb) {
    long long total = m * n;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
        long long r = i / n, c = i % n;
        float acc = 0.0f;
        for (long long p = 0; p < k; ++p) {
            float a = ta ? A[p * lda + r] : A[r * lda + p];
            float b = tb ? B[c * ldb + p] : B[p * ldb + c];
            acc = __fadd_rn(acc, __fmul_rn(a, b));
        }
        C[i] = acc;
    }
}

}  // extern "C"
