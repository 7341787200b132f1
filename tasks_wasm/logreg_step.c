/*
 * logreg_step: one full-batch gradient step of logistic regression on a shard of data, the
 * building block of federated averaging.
 *
 * Input, binary little-endian (binary so that every float arrives exactly):
 *   "LRS1", u32 rows, u32 features (F), f64 learning_rate, f64 w[F + 1] (the bias last),
 *   then `rows` records, each f64 x[F] followed by f64 y (0.0 or 1.0).
 * Output, binary little-endian: f64 new_w[F + 1], then f64 mean log-loss of the shard under
 * the OLD weights.
 *
 * Per row, IEEE double, each operation rounded, in exactly this order:
 *   z    = ((((0.0 + w[0]*x[0]) + w[1]*x[1]) + ...) + w[F-1]*x[F-1]) + w[F]
 *   e    = exp_neg(-|z|)                                   (in [0, 1])
 *   p    = z >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e)     (sigmoid(z))
 *   loss = pos(y == 1.0 ? -z : z) + log_1_2(1.0 + e)      (pos(a) = a > 0.0 ? a : 0.0)
 *   err  = p - y
 *   g[j] = g[j] + err * x[j] for j < F;  g[F] = g[F] + err (g starts at 0.0, rows in order)
 *   total = total + loss (from 0.0, rows in order)
 * then new_w[j] = w[j] - learning_rate * (g[j] / rows) and mean loss = total / rows.
 * With rows == 0, new_w = w (bit for bit) and the loss is 0.0.
 * (loss is -log(p) for y = 1 and -log(1 - p) for y = 0, in a form that cannot overflow.)
 *
 * exp and log are built here from + - * / alone, so that another implementation can repeat
 * every operation and get the same bits; libm results differ from one library to the next.
 *
 *   exp_neg(t), for t <= 0:
 *     if not (t >= -708.0): return 0.0          (far below, -inf or NaN: e^t underflows)
 *     k = floor(t * INV_LN2 + 0.5)              (the integer nearest t / ln 2, -1021..0)
 *     r = (t - k * LN2_HI) - k * LN2_LO         (|r| <= ~0.347; k * LN2_HI is exact)
 *     q = 1/13!; then for i = 12 down to 0: q = q * r + 1/i!    (Taylor series, Horner)
 *     return q * 2^k                            (exact scaling; 2^k built from its bits)
 *
 *   log_1_2(v), for v in [1, 2]:
 *     if v > SQRT2: f = v * 0.5, k = 1 else: f = v, k = 0
 *     s = (f - 1.0) / (f + 1.0);  z = s * s      (|s| <= 0.172)
 *     q = 1/25; then for i = 11 down to 0: q = q * z + 1/(2i+1)
 *     return k ? LN2 + (2.0 * s) * q : (2.0 * s) * q      (log f = 2 atanh s)
 *
 *   The coefficients 1/i! and 1/(2i+1) are the doubles nearest those fractions, i.e. the
 *   correctly rounded quotient 1.0 / (double)i! (i! is exact in a double for i <= 13). The
 *   truncated terms are below 1e-17 relative; rounding leaves both functions within a few
 *   ulp of the true value (1e-15 relative). The constants are given as hex floats below.
 *
 * Errors (the subtask fails with task_error): bad magic, a length that does not match rows and
 * features, a non-finite learning rate, weight or x, or a y other than 0 or 1.
 */
#include "meshnode_task.h"

#define HEADER_LEN 20 /* magic, rows, features, learning_rate */

static const double INV_LN2 = 0x1.71547652b82fep+0; /* 1 / ln 2 */
static const double LN2_HI = 0x1.62e42feep-1;       /* ln 2 = LN2_HI + LN2_LO, LN2_HI with 11 zero low bits */
static const double LN2_LO = 0x1.a39ef35793c76p-33;
static const double LN2 = 0x1.62e42fefa39efp-1;
static const double SQRT2 = 0x1.6a09e667f3bcdp+0;

static double exp_neg(double t) {
    if (!(t >= -708.0))
        return 0.0;
    double k = __builtin_floor(t * INV_LN2 + 0.5);
    double r = (t - k * LN2_HI) - k * LN2_LO;
    static const double inv_fact[14] = {
        1.0 / 1.0, 1.0 / 1.0, 1.0 / 2.0, 1.0 / 6.0, 1.0 / 24.0, 1.0 / 120.0, 1.0 / 720.0,
        1.0 / 5040.0, 1.0 / 40320.0, 1.0 / 362880.0, 1.0 / 3628800.0, 1.0 / 39916800.0,
        1.0 / 479001600.0, 1.0 / 6227020800.0,
    };
    double q = inv_fact[13];
    for (int i = 12; i >= 0; i--)
        q = q * r + inv_fact[i];
    uint64_t bits = (uint64_t)((int64_t)k + 1023) << 52; /* 2^k, k >= -1021: a normal number */
    double scale;
    __builtin_memcpy(&scale, &bits, 8);
    return q * scale;
}

static double log_1_2(double v) {
    int k = v > SQRT2;
    double f = k ? v * 0.5 : v;
    double s = (f - 1.0) / (f + 1.0), z = s * s;
    double q = 1.0 / 25.0;
    for (int i = 11; i >= 0; i--)
        q = q * z + 1.0 / (double)(2 * i + 1);
    double y = (2.0 * s) * q;
    return k ? LN2 + y : y;
}

static double pos(double a) { return a > 0.0 ? a : 0.0; }

static bool finite(double v) { return v - v == 0.0; } /* inf - inf and NaN - NaN are NaN */

MESHNODE_EXPORT(run) int64_t run(const uint8_t *in, uint32_t len) {
    if (len < 4 || !mn_memeq(in, "LRS1", 4))
        return mn_error("bad magic: input must start with LRS1");
    if (len < HEADER_LEN)
        return mn_error("input shorter than the 20-byte header");
    uint32_t rows = mn_u32le(in + 4), features = mn_u32le(in + 8);
    uint64_t nw = (uint64_t)features + 1, record = 8 * nw;
    /* Compare by division: rows * record can overflow 64 bits. */
    uint64_t body = len - HEADER_LEN;
    if (body < record || (body - record) % record != 0 || (body - record) / record != rows) {
        out_error_begin();
        out_str("bad length: ");
        out_u64(len);
        out_str(" bytes do not hold ");
        out_u64(rows);
        out_str(" rows of ");
        out_u64(features);
        out_str(" features");
        return out_error_end();
    }

    double lr = mn_f64le(in + 12);
    const uint8_t *weights = in + HEADER_LEN, *data = weights + record;
    double *w = mn_alloc((uint32_t)record), *g = mn_alloc((uint32_t)record);
    bool ok = finite(lr);
    for (uint64_t j = 0; j < nw; j++) {
        w[j] = mn_f64le(weights + 8 * j);
        g[j] = 0.0;
        ok = ok && finite(w[j]);
    }
    if (!ok)
        return mn_error("learning rate and weights must be finite");

    double total = 0.0;
    for (uint32_t i = 0; i < rows; i++) {
        const uint8_t *x = data + (uint64_t)i * record;
        double y = mn_f64le(x + 8 * features);
        if (!(y == 0.0 || y == 1.0))
            return mn_error("y must be 0 or 1");
        double z = 0.0;
        for (uint32_t j = 0; j < features; j++) {
            double xj = mn_f64le(x + 8 * j);
            if (!finite(xj))
                return mn_error("x must be finite");
            z = z + w[j] * xj;
        }
        z = z + w[features];

        double e = exp_neg(-__builtin_fabs(z));
        double p = z >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
        total = total + (pos(y == 1.0 ? -z : z) + log_1_2(1.0 + e));
        double err = p - y;
        for (uint32_t j = 0; j < features; j++)
            g[j] = g[j] + err * mn_f64le(x + 8 * j);
        g[features] = g[features] + err;
    }

    if (rows == 0) {
        out_bytes(weights, (uint32_t)record);
        out_f64le(0.0);
        return mn_return();
    }
    double count = (double)rows;
    for (uint64_t j = 0; j < nw; j++)
        out_f64le(w[j] - lr * (g[j] / count));
    out_f64le(total / count);
    return mn_return();
}
