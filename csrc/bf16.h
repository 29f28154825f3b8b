/* bfloat16: float32 -> bfloat16 conversion (round to nearest even, NaN stays a quiet NaN of
 * the same sign).  The bf16 fused step's passes call it on the row or tile they have just
 * written in float32, while it is in L1 (step_loops.h bias_act_bf16 / mask_colsum_bf16,
 * post.h fm_post_f32).
 *
 * Design: a bf16 value is the high 16 bits of a float32, stored as uint16_t.  Rounding adds
 * 0x7FFF plus the lowest kept bit and drops the low 16 bits; finite values that round past
 * the largest bf16 become inf, as IEEE rounding says.  The loop is compiled like updates.h's
 * (AVX-512, AVX2, baseline; target_clones) and GCC vectorises it: the select is branch-free.
 * fastmlp.backends.reference.to_bf16 is the same rounding in NumPy, the oracle.
 * Shapes: x and out have n elements.
 */
#ifndef FASTMLP_BF16_H
#define FASTMLP_BF16_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "updates.h"   /* FASTMLP_CLONES */

static inline uint16_t fastmlp_bf16(float x) {
    /* 32-bit lanes and masks, narrowed once at the end: written as a select of two 16-bit
     * results, GCC packed and unpacked 16-bit lanes inside the loop (200 704 floats: 47 us
     * against 37 us for this form, on this AVX-512 machine) */
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    uint32_t nan = 0u - (uint32_t)((u & 0x7FFFFFFFu) > 0x7F800000u);   /* all ones for NaN */
    uint32_t bias = (0x7FFFu + ((u >> 16) & 1u)) & ~nan;
    return (uint16_t)(((u + bias) >> 16) | (nan & 0x40u));
}

FASTMLP_CLONES static void to_bf16_f32(uint16_t *restrict out, const float *restrict x,
                                       ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i++) out[i] = fastmlp_bf16(x[i]);
}

#endif
