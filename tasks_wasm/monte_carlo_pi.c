/*
 * monte_carlo_pi: count random points of the unit square that fall in the quarter disc.
 *
 * Input: {"seed":S,"samples":N}, integers, S in 0..2^64-1, N in 0..10^12.
 * Output: {"samples":N,"hits":H}
 *
 * One splitmix64 stream started at `seed` gives two outputs per sample, r1 then r2, mapped
 * to [0, 1) as u(r) = (double)(r >> 11) * 0x1.0p-53 (exact). With x = u(r1), y = u(r2)
 * the sample is a hit when x * x + y * y <= 1.0 (products rounded, then the sum).
 * pi is about 4 * H / N.
 */
#include "meshnode_task.h"

#define MAX_SAMPLES 1000000000000ull

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double unit(uint64_t r) { return (double)(r >> 11) * 0x1.0p-53; }

MESHNODE_EXPORT(run) int64_t run(const uint8_t *in, uint32_t len) {
    mn_span obj;
    uint64_t state, samples;
    if (!mn_input_object(in, len, &obj) ||
        !mn_get_u64(obj, "seed", 0, UINT64_MAX, &state) ||
        !mn_get_u64(obj, "samples", 0, MAX_SAMPLES, &samples))
        return mn_return();

    uint64_t hits = 0;
    for (uint64_t i = 0; i < samples; i++) {
        double x = unit(splitmix64(&state));
        double y = unit(splitmix64(&state));
        hits += x * x + y * y <= 1.0;
    }
    out_str("{\"samples\":");
    out_u64(samples);
    out_str(",\"hits\":");
    out_u64(hits);
    out_str("}");
    return mn_return();
}
