extern "C" {

// The first non-finite loss sets *halt (and records its step); optimizer kernels given that flag
// then do nothing, so the weights stay those of the last finite step. No host sync needed.
// Only the first thread acts, so any launch shape works.
__global__ void guard_loss(const float* loss, int* halt, long long* bad_step, float* bad_loss, long long step) {
    if (blockIdx.x == 0 && threadIdx.x == 0 && !*halt && !isfinite(*loss)) {
        *halt = 1; *bad_step = step; *bad_loss = *loss;
    }
}

}  // extern "C"
