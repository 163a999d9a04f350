#include <math.h>
#include <stddef.h>
/* LSTM forward elementwise, rnnkit internal layout: a (n, 4H) holds h W_hh^T with i, f, o rows
   halved; gx (n, 4H) the input projection + bias (halved the same way). In place. */
void lstm_fwd(float *restrict a, const float *restrict gx, float *restrict c,
              float *restrict cprev, float *restrict tanhc, float *restrict h, long n, long H) {
    for (long b = 0; b < n; b++) {
        float *ab = a + b * 4 * H;
        const float *gb = gx + b * 4 * H;
        #pragma omp simd
        for (long k = 0; k < 4 * H; k++) ab[k] = tanhf(ab[k] + gb[k]);
        #pragma omp simd
        for (long k = 0; k < 3 * H; k++) ab[k] = 0.5f * ab[k] + 0.5f;
        float *cb = c + b * H, *cp = cprev + b * H, *tc = tanhc + b * H, *hb = h + b * H;
        #pragma omp simd
        for (long j = 0; j < H; j++) {
            float cn = ab[H + j] * cb[j] + ab[j] * ab[3 * H + j];
            cp[j] = cb[j];
            cb[j] = cn;
        }
        #pragma omp simd
        for (long j = 0; j < H; j++) {
            float t = tanhf(cb[j]);
            tc[j] = t;
            hb[j] = ab[2 * H + j] * t;
        }
    }
}
