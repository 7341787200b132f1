/*
 * mandelbrot: escape-time counts for one tile of an image of the Mandelbrot set.
 *
 * Input, a JSON object of integers:
 *   {"x0":..,"y0":..,"w":..,"h":..,"width":..,"height":..,"max_iter":..}
 * The full image is width x height pixels and covers re in [-2.0, 1.0], im in [-1.5, 1.5].
 * The subtask is the w x h tile whose top-left pixel is (x0, y0).
 *
 * Output: w*h counts as uint32 little-endian, row-major (4*w*h bytes).
 *
 * Exact arithmetic, IEEE double, each operation rounded, in exactly this order:
 *   cr = -2.0 + (double)px * (3.0 / (double)width)
 *   ci = -1.5 + (double)py * (3.0 / (double)height)
 *   zr = 0.0; zi = 0.0; n = 0
 *   while n < max_iter:
 *       rr = zr * zr; ii = zi * zi
 *       if rr + ii > 4.0: break
 *       zi = (2.0 * zr) * zi + ci
 *       zr = (rr - ii) + cr
 *       n = n + 1
 *   count = n
 * So count is the number of iterations made while |z|^2 <= 4, between 1 and max_iter (z
 * starts at 0, which never escapes); a point that never escapes counts max_iter.
 *
 * Limits: width, height, w, h in 1..2^31-1; x0, y0 in 0..2^31-1; x0 + w <= width and
 * y0 + h <= height; w*h <= 16,777,216; max_iter in 1..1,000,000.
 */
#include "meshnode_task.h"

#define MAX_PIXELS 16777216u
#define MAX_ITER 1000000u
#define MAX_SIDE 2147483647u

/*
 * Iterations per trip round the outer loop. wasm runs with fuel metering and an epoch
 * deadline, and both are checked at every loop back-edge: with one iteration per trip that
 * check costs as much as the iteration itself (1.98x native, against 1.13x with 8; see
 * docs/benchmarks.md). The counts are identical either way; only fuel differs.
 */
#ifndef ESCAPE_UNROLL
#define ESCAPE_UNROLL 8
#endif

static uint32_t escape_count(double cr, double ci, uint32_t max_iter) {
    double zr = 0.0, zi = 0.0;
    uint32_t n = 0;
#define ESCAPE_STEP                                                                                \
    {                                                                                              \
        double rr = zr * zr, ii = zi * zi;                                                         \
        if (rr + ii > 4.0)                                                                         \
            return n;                                                                              \
        zi = (2.0 * zr) * zi + ci;                                                                 \
        zr = (rr - ii) + cr;                                                                       \
        n++;                                                                                       \
    }
#if ESCAPE_UNROLL > 1
    while (n + ESCAPE_UNROLL <= max_iter) {
#pragma clang loop unroll(full)
        for (int k = 0; k < ESCAPE_UNROLL; k++)
            ESCAPE_STEP
    }
#endif
    while (n < max_iter)
        ESCAPE_STEP
#undef ESCAPE_STEP
    return n;
}

MESHNODE_EXPORT(run) int64_t run(const uint8_t *in, uint32_t len) {
    mn_span obj;
    uint64_t x0, y0, w, h, width, height, max_iter;
    if (!mn_input_object(in, len, &obj) ||
        !mn_get_u64(obj, "x0", 0, MAX_SIDE, &x0) ||
        !mn_get_u64(obj, "y0", 0, MAX_SIDE, &y0) ||
        !mn_get_u64(obj, "w", 1, MAX_SIDE, &w) ||
        !mn_get_u64(obj, "h", 1, MAX_SIDE, &h) ||
        !mn_get_u64(obj, "width", 1, MAX_SIDE, &width) ||
        !mn_get_u64(obj, "height", 1, MAX_SIDE, &height) ||
        !mn_get_u64(obj, "max_iter", 1, MAX_ITER, &max_iter))
        return mn_return();
    if (x0 + w > width || y0 + h > height)
        return mn_error("tile outside the image");
    if (w * h > MAX_PIXELS)
        return mn_error("tile larger than 16777216 pixels");

    double dx = 3.0 / (double)width, dy = 3.0 / (double)height;
    uint8_t *dst = out_extend((uint32_t)(4 * w * h));
    for (uint64_t py = y0; py < y0 + h; py++) {
        double ci = -1.5 + (double)py * dy;
        for (uint64_t px = x0; px < x0 + w; px++) {
            uint32_t count = escape_count(-2.0 + (double)px * dx, ci, (uint32_t)max_iter);
            __builtin_memcpy(dst, &count, 4); /* wasm stores are little-endian */
            dst += 4;
        }
    }
    return mn_return();
}
