/* In-place optimiser updates over flat arrays, float and double.
 *
 * Design: these loops are memory-bound and vectorise; the package is built for the baseline
 * x86-64 ISA (no -march=native), so on x86-64 with GCC/Clang each loop is compiled three
 * times, for AVX-512, for AVX2 and for the baseline, and the loader picks one at run time
 * (target_clones).  The build turns FMA contraction off (-ffp-contract=off): a fused
 * multiply-add would round differently from the NumPy reference and from the other clones.
 * Shapes: every array has n elements.  g = dW + wd2 * W (wd2 = 2 * weight_decay).
 */
#ifndef FASTMLP_UPDATES_H
#define FASTMLP_UPDATES_H
#include <math.h>
#include <stddef.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && defined(__linux__)
#define FASTMLP_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FASTMLP_CLONES
#endif

#define FASTMLP_DEFINE_UPDATES(T, SUFFIX, SQRT)                                               \
FASTMLP_CLONES static void sgd_plain_##SUFFIX(T *restrict W, const T *restrict dW,           \
                                              ptrdiff_t n, T lr, T wd2) {                     \
    for (ptrdiff_t i = 0; i < n; i++) W[i] -= lr * (dW[i] + wd2 * W[i]);                      \
}                                                                                             \
FASTMLP_CLONES static void sgd_momentum_##SUFFIX(T *restrict W, const T *restrict dW,        \
                                                 T *restrict v, ptrdiff_t n, T lr, T wd2,     \
                                                 T mu, int nesterov) {                        \
    if (nesterov) {                                                                           \
        for (ptrdiff_t i = 0; i < n; i++) {                                                   \
            T g = dW[i] + wd2 * W[i];                                                         \
            T vi = mu * v[i] + g;                                                             \
            v[i] = vi;                                                                        \
            W[i] -= lr * (g + mu * vi);                                                       \
        }                                                                                     \
    } else {                                                                                  \
        for (ptrdiff_t i = 0; i < n; i++) {                                                   \
            T vi = mu * v[i] + (dW[i] + wd2 * W[i]);                                          \
            v[i] = vi;                                                                        \
            W[i] -= lr * vi;                                                                  \
        }                                                                                     \
    }                                                                                         \
}                                                                                             \
FASTMLP_CLONES static void adam_##SUFFIX(T *restrict W, const T *restrict dW,                \
                                         T *restrict m, T *restrict v, ptrdiff_t n,           \
                                         T lr, T b1, T b2, T ob1, T ob2, T c1, T c2, T eps,   \
                                         T wd2) {                                             \
    /* the bias corrections as one step size and one reciprocal, hoisted: a vector divide   \
     * costs as much as several multiplies, and per element this leaves one divide and one    \
     * square root (the loop was bound by them: 144 -> 120 us over 200k floats) */            \
    const T step = lr / c1, rc2 = (T)1 / c2;                                                  \
    for (ptrdiff_t i = 0; i < n; i++) {                                                       \
        T g = dW[i] + wd2 * W[i];                                                             \
        T mi = b1 * m[i] + ob1 * g;                                                           \
        T vi = b2 * v[i] + ob2 * g * g;                                                       \
        m[i] = mi;                                                                            \
        v[i] = vi;                                                                            \
        W[i] -= step * mi / (SQRT(vi * rc2) + eps);                                           \
    }                                                                                         \
}

FASTMLP_DEFINE_UPDATES(float, f32, sqrtf)
FASTMLP_DEFINE_UPDATES(double, f64, sqrt)

#endif
