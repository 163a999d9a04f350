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

/* LSTM backward elementwise, same layout: a (n, 4H) holds i, f, o, g after their
   nonlinearities; given dh = dL/dh_t and dc = dL/dc_t (in place -> dL/dc_{t-1}), write
   dgx (n, 4H) = dL/d(pre-activations) in the same gate order. */
void lstm_bwd(const float *restrict a, const float *restrict tanhc, const float *restrict cprev,
              const float *restrict dh, float *restrict dc, float *restrict dgx, long n, long H) {
    for (long b = 0; b < n; b++) {
        const float *i = a + b * 4 * H, *f = i + H, *o = i + 2 * H, *g = i + 3 * H;
        const float *tc = tanhc + b * H, *cp = cprev + b * H, *dhb = dh + b * H;
        float *dcb = dc + b * H;
        float *di = dgx + b * 4 * H, *df = di + H, *dO = di + 2 * H, *dg = di + 3 * H;
        #pragma omp simd
        for (long j = 0; j < H; j++) {
            float t = tc[j];
            float dcn = dcb[j] + dhb[j] * o[j] * (1.0f - t * t);
            float dov = dhb[j] * t;
            dO[j] = dov * o[j] * (1.0f - o[j]);
            di[j] = dcn * g[j] * i[j] * (1.0f - i[j]);
            df[j] = dcn * cp[j] * f[j] * (1.0f - f[j]);
            dg[j] = dcn * i[j] * (1.0f - g[j] * g[j]);
            dcb[j] = dcn * f[j];
        }
    }
}
