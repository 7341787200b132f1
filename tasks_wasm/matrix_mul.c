/*
 * matrix_mul: one tile of C = A x B for pseudo-random A (m x k) and B (k x n).
 *
 * Input, a JSON object of integers:
 *   {"seed":..,"m":..,"k":..,"n":..,"row0":..,"col0":..,"rows":..,"cols":..}
 * Output: the tile C[row0 .. row0+rows-1][col0 .. col0+cols-1] as rows*cols float64
 * little-endian, row-major.
 *
 * The matrices: one splitmix64 stream started at `seed` gives A's m*k elements row-major,
 * then B's k*n elements row-major. Output r of the stream becomes
 *   u = (double)(r >> 11) * 0x1.0p-53       (exact: 53 bits, in [0, 1))
 *   element = 2.0 * u - 1.0                 (exact too, in [-1, 1))
 *
 * Each C[i][j] is summed in the order p = 0 .. k-1: acc = 0.0; acc = acc + A[i][p] * B[p][j]
 * (the product is rounded, then the sum: wasm has no fused multiply-add).
 *
 * splitmix64 can jump: output number t (1-based) depends only on seed + t * GAMMA, so the
 * task generates just the rows of A and the columns of B that the tile needs.
 *
 * Limits: seed in 0..2^64-1; m, k, n in 1..1,048,576; the tile lies inside C; rows*k,
 * k*cols and rows*cols are each at most 4,194,304 (32 MiB of doubles).
 */
#include "meshnode_task.h"

#define MAX_DIM 1048576u
#define MAX_ELEMS 4194304u
#define GAMMA 0x9E3779B97F4A7C15ull

/* Element `index` (0-based) of the stream: the (index + 1)-th splitmix64 output, mapped to [-1, 1). */
static double element(uint64_t seed, uint64_t index) {
    uint64_t z = seed + (index + 1) * GAMMA;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    double u = (double)(z >> 11) * 0x1.0p-53;
    return 2.0 * u - 1.0;
}

MESHNODE_EXPORT(run) int64_t run(const uint8_t *in, uint32_t len) {
    mn_span obj;
    uint64_t seed, m, k, n, row0, col0, rows, cols;
    if (!mn_input_object(in, len, &obj) ||
        !mn_get_u64(obj, "seed", 0, UINT64_MAX, &seed) ||
        !mn_get_u64(obj, "m", 1, MAX_DIM, &m) ||
        !mn_get_u64(obj, "k", 1, MAX_DIM, &k) ||
        !mn_get_u64(obj, "n", 1, MAX_DIM, &n) ||
        !mn_get_u64(obj, "row0", 0, MAX_DIM, &row0) ||
        !mn_get_u64(obj, "col0", 0, MAX_DIM, &col0) ||
        !mn_get_u64(obj, "rows", 1, MAX_DIM, &rows) ||
        !mn_get_u64(obj, "cols", 1, MAX_DIM, &cols))
        return mn_return();
    if (row0 + rows > m || col0 + cols > n)
        return mn_error("tile outside the matrix");
    if (rows * k > MAX_ELEMS || k * cols > MAX_ELEMS || rows * cols > MAX_ELEMS)
        return mn_error("tile too large: rows*k, k*cols and rows*cols must each be at most 4194304");

    /* The tile's rows of A, and its columns of B stored column by column (B transposed), so
       that the inner loop reads both sequentially. */
    double *a = mn_alloc((uint32_t)(rows * k * sizeof(double)));
    double *bt = mn_alloc((uint32_t)(cols * k * sizeof(double)));
    for (uint64_t i = 0; i < rows; i++)
        for (uint64_t p = 0; p < k; p++)
            a[i * k + p] = element(seed, (row0 + i) * k + p);
    for (uint64_t j = 0; j < cols; j++)
        for (uint64_t p = 0; p < k; p++)
            bt[j * k + p] = element(seed, m * k + p * n + col0 + j);

    uint8_t *dst = out_extend((uint32_t)(rows * cols * sizeof(double)));
    for (uint64_t i = 0; i < rows; i++) {
        for (uint64_t j = 0; j < cols; j++) {
            const double *ai = a + i * k, *bj = bt + j * k;
            double acc = 0.0;
            for (uint64_t p = 0; p < k; p++)
                acc = acc + ai[p] * bj[p];
            __builtin_memcpy(dst, &acc, 8);
            dst += 8;
        }
    }
    return mn_return();
}
