extern "C" {

// The first non-finite loss sets *halt (and records its step); optimizer kernels given that flag
// then do nothing, so the weights stay those of the last finite step. No host sync needed.
// The step's id: the host's `step`, or, when `counter` is not null, the device counter *counter, which
// this launch then advances by one (so a training step passes nothing that changes from step to step:
// the launch can be captured in a CUDA graph and replayed). The twin (guard.py) does the same.
// Only the first thread acts, so any launch shape works.
__global__ void guard_loss(const float* loss, int* halt, long long* bad_step, float* bad_loss, long long step,
                           long long* counter) {
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        long long id = step;
        if (counter) {
            id = *counter;
            *counter = id + 1;
        }
        if (!*halt && !isfinite(*loss)) {
            *halt = 1; *bad_step = id; *bad_loss = *loss;
        }
    }
}

}  // extern "C"
