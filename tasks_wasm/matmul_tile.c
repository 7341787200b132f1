/*
 * matmul_tile: one tile of C = A x B, for matrices the user brings.
 *
 * Input, binary and little-endian (so every double arrives exactly):
 *   bytes 0..3    the magic "MMT1"
 *   u32 rows, u32 k, u32 cols
 *   A's row block: rows x k float64, row-major
 *   B's column block: k x cols float64, row-major
 * The input is exactly 16 + 8 * (rows*k + k*cols) bytes long.
 *
 * Output: the rows x cols tile of C as float64 little-endian, row-major (8*rows*cols bytes).
 *
 * Each C[i][j] is summed in the order p = 0 .. k-1: acc = 0.0; acc = acc + A[i][p] * B[p][j]
 * (the product is rounded, then the sum: wasm has no fused multiply-add). A plain Python loop
 * in that order gives the same bits.
 *
 * NaN: a NaN the arithmetic makes (inf - inf, 0 * inf) may differ in sign and payload between
 * machines; submit with nan_canonical when the inputs hold non-finite values or may overflow.
 *
 * Limits: rows, k, cols at least 1; rows*k, k*cols and rows*cols each at most 4,194,304
 * (32 MiB of doubles).
 */
#include "meshnode_task.h"

#define HEADER 16u
#define MAX_ELEMS 4194304u


MESHNODE_EXPORT(run) int64_t run(const uint8_t *in, uint32_t len) {
    if (len < HEADER || !mn_memeq(in, "MMT1", 4))
        return mn_error("input must start with the magic MMT1 and the u32 rows, k, cols");
    uint64_t rows = mn_u32le(in + 4), k = mn_u32le(in + 8), cols = mn_u32le(in + 12);
    if (!rows || !k || !cols)
        return mn_error("rows, k and cols must each be at least 1");
    /* Each product of two u32 fits in 64 bits; checking them one by one keeps the sum below from overflowing. */
    if (rows * k > MAX_ELEMS || k * cols > MAX_ELEMS || rows * cols > MAX_ELEMS)
        return mn_error("tile too large: rows*k, k*cols and rows*cols must each be at most 4194304");
    if (len != HEADER + 8 * (rows * k + k * cols))
        return mn_error("input length must be 16 + 8 * (rows*k + k*cols) bytes");

    const uint8_t *a = in + HEADER, *b = a + 8 * rows * k;
    /* B's columns stored one after the other (B transposed), so that the inner loop reads
       both operands sequentially. */
    double *bt = mn_alloc((uint32_t)(cols * k * sizeof(double)));
    for (uint64_t p = 0; p < k; p++)
        for (uint64_t j = 0; j < cols; j++)
            bt[j * k + p] = mn_f64le(b + 8 * (p * cols + j));
    double *ai = mn_alloc((uint32_t)(k * sizeof(double)));

    uint8_t *dst = out_extend((uint32_t)(rows * cols * sizeof(double)));
    for (uint64_t i = 0; i < rows; i++) {
        for (uint64_t p = 0; p < k; p++)
            ai[p] = mn_f64le(a + 8 * (i * k + p));
        for (uint64_t j = 0; j < cols; j++) {
            const double *bj = bt + j * k;
            double acc = 0.0;
            for (uint64_t p = 0; p < k; p++)
                acc = acc + ai[p] * bj[p];
            __builtin_memcpy(dst, &acc, 8);
            dst += 8;
        }
    }
    return mn_return();
}
