/* Inverted dropout's mask from a counter-based generator (contract.py, "dropout masks"):
 * entry (r, j) of an (N, H) hidden layer's activations is kept when its SplitMix64 draw
 * mix64(stream + (r·H + j + 1)·GOLDEN) >> 40 is at least thr = round(p·2²⁴), with
 * stream = mix64(mix64(seed) ^ (step·2¹⁶ + layer)); a kept entry is scaled by s = 1/(1-p),
 * a dropped one set to 0.  The same draw in the forward pass (on the activations) and in
 * the backward pass (on the delta), so no mask is stored.  reference.dropout and
 * numba/kernels.py's `_dropout_row` are the same formula; the tests hold all three to it.
 *
 * Design: one row at a time (the step's passes work row by row while the row is in L1);
 * the draw is unsigned 64-bit arithmetic, which wraps modulo 2⁶⁴ in C as in the reference.
 * Shapes: x (H,) one row; `first` = r·H + 1, the counter of the row's first entry.
 */
#ifndef FASTMLP_DROPOUT_H
#define FASTMLP_DROPOUT_H
#include <stddef.h>
#include <stdint.h>
#include "updates.h"   /* FASTMLP_CLONES */

/* the draw is 64-bit multiplies: AVX-512DQ's vpmullq vectorises them (x86-64-v4), AVX-512F
 * alone emulates them, so the row loop gets that clone where the compiler has it (GCC 12+) */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && \
    defined(__linux__)
#define FASTMLP_DROPOUT_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define FASTMLP_DROPOUT_CLONES FASTMLP_CLONES
#endif

#define FM_GOLDEN 0x9E3779B97F4A7C15ULL
#define FM_MIX1 0xBF58476D1CE4E5B9ULL
#define FM_MIX2 0x94D049BB133111EBULL

static inline uint64_t fm_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * FM_MIX1;
    z = (z ^ (z >> 27)) * FM_MIX2;
    return z ^ (z >> 31);
}

/* the key of one layer's mask at one optimizer step */
static inline uint64_t fm_dropout_stream(uint64_t seed, uint64_t step, uint64_t layer) {
    return fm_mix64(fm_mix64(seed) ^ ((step << 16) | layer));
}

/* one layer's dropout at one step: the stream, the threshold and the scales in the step's
 * dtype (s = 1/(1-p) for kept entries; q = 1-p turns a kept output back into f(z)) */
typedef struct { uint64_t stream, thr; float s, q; } fm_drop_f32;
typedef struct { uint64_t stream, thr; double s, q; } fm_drop_f64;

#define FASTMLP_DEFINE_DROPOUT(T, SUFFIX)                                                    \
/* x (H,) = x·s where kept, 0 where dropped; row counter `first` */                           \
FASTMLP_DROPOUT_CLONES static void dropout_row_##SUFFIX(T *restrict x, ptrdiff_t H, uint64_t first,  \
                                                const fm_drop_##SUFFIX *d) {                  \
    uint64_t stream = d->stream, thr = d->thr;                                                \
    T s = d->s;                                                                               \
    for (ptrdiff_t j = 0; j < H; j++) {                                                       \
        uint64_t z = fm_mix64(stream + (first + (uint64_t)j) * FM_GOLDEN);                   \
        x[j] = (z >> 40) >= thr ? x[j] * s : (T)0;                                            \
    }                                                                                         \
}                                                                                             \
/* A (N, H) through the mask in place: the kernel `dropout` */                                \
static void dropout_##SUFFIX(T *A, ptrdiff_t N, ptrdiff_t H, const fm_drop_##SUFFIX *d) {     \
    for (ptrdiff_t i = 0; i < N; i++)                                                         \
        dropout_row_##SUFFIX(A + i * H, H, (uint64_t)i * (uint64_t)H + 1, d);                 \
}

FASTMLP_DEFINE_DROPOUT(float, f32)
FASTMLP_DEFINE_DROPOUT(double, f64)

#endif
