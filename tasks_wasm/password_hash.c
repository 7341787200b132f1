/*
 * password_hash: find the candidates whose SHA-256 digest is a given target.
 *
 * Input:  {"target":"<64 hex digits, either case>","candidates":["pw1","pw2",...]}
 * Output: {"checked":N,"matches":[{"index":i,"password":"..."},...]}
 *
 * Each candidate is hashed as the UTF-8 bytes of its decoded JSON string (\uXXXX escapes,
 * surrogate pairs included, become UTF-8). N is the number of candidates; matches lists
 * every candidate whose digest equals the target, in input order, index counting from 0.
 * The output JSON is compact, with non-ASCII text written as UTF-8 and only '"', '\\' and
 * control characters escaped (\b \f \n \r \t, else \u00xx).
 *
 * Errors (the subtask fails with task_error): a missing or malformed target, candidates that
 * are not an array of strings, or a string holding an unpaired surrogate (it has no UTF-8 form).
 */
#include "meshnode_task.h"

/* SHA-256, FIPS 180-4. */

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t rotr(uint32_t x, int n) { return x >> n | x << (32 - n); }

static void sha256_block(uint32_t h[8], const uint8_t *block) {
    uint32_t w[64];
    for (int t = 0; t < 16; t++)
        w[t] = (uint32_t)block[4 * t] << 24 | (uint32_t)block[4 * t + 1] << 16 |
               (uint32_t)block[4 * t + 2] << 8 | block[4 * t + 3];
    for (int t = 16; t < 64; t++) {
        uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ w[t - 15] >> 3;
        uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ w[t - 2] >> 10;
        w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int t = 0; t < 64; t++) {
        uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[t] + w[t];
        uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        hh = g; g = f; f = e; e = d + t1;
        d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d;
    h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}

static void sha256(const uint8_t *msg, uint32_t len, uint8_t digest[32]) {
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                     0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    uint32_t done = 0;
    for (; len - done >= 64; done += 64)
        sha256_block(h, msg + done);

    /* Padding: 0x80, zeros, then the length in bits as a 64-bit big-endian number, which
       takes one more block, or two when fewer than 9 bytes are left in this one. */
    uint8_t tail[128] = {0};
    uint32_t rest = len - done, blocks = rest < 56 ? 1 : 2;
    __builtin_memcpy(tail, msg + done, rest);
    tail[rest] = 0x80;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++)
        tail[64 * blocks - 1 - i] = (uint8_t)(bits >> (8 * i));
    for (uint32_t i = 0; i < blocks; i++)
        sha256_block(h, tail + 64 * i);

    for (int i = 0; i < 32; i++)
        digest[i] = (uint8_t)(h[i / 4] >> (24 - 8 * (i % 4)));
}

/* The task. */

static bool parse_target(const uint8_t *s, uint32_t n, uint8_t digest[32]) {
    if (n != 64)
        return false;
    for (int i = 0; i < 32; i++) {
        int hi = mn_hex_digit(s[2 * i]), lo = mn_hex_digit(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        digest[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

MESHNODE_EXPORT(run) int64_t run(const uint8_t *in, uint32_t len) {
    mn_span obj, target, candidates, item;
    if (!mn_input_object(in, len, &obj))
        return mn_return();

    /* No decoded string is longer than the input it came from, so one scratch buffer of
       the input's size serves the target and every candidate. */
    uint8_t *text = mn_alloc(len);
    uint32_t n;
    uint8_t want[32], got[32];
    if (!mn_json_get(obj, "target", &target))
        return mn_error("missing key target");
    if (!mn_json_str(target, text, &n) || !parse_target(text, n, want))
        return mn_error("target must be a string of 64 hex digits");
    if (!mn_json_get(obj, "candidates", &candidates))
        return mn_error("missing key candidates");

    /* Count first: the count leads the output. */
    mn_json_iter it;
    uint64_t count = 0, index = 0, matches = 0;
    if (!mn_json_iter_array(candidates, &it))
        return mn_error("candidates must be an array of strings");
    while (mn_json_next(&it, &item))
        count++;

    out_str("{\"checked\":");
    out_u64(count);
    out_str(",\"matches\":[");
    mn_json_iter_array(candidates, &it);
    for (; mn_json_next(&it, &item); index++) {
        if (!mn_json_is_string(item) || !mn_json_str(item, text, &n)) {
            out_error_begin(); /* discards the output written so far */
            out_str("candidates[");
            out_u64(index);
            out_str(mn_json_is_string(item) ? "] contains an unpaired surrogate" : "] is not a string");
            return out_error_end();
        }
        sha256(text, n, got);
        if (!mn_memeq(got, want, 32))
            continue;
        out_str(matches++ ? ",{\"index\":" : "{\"index\":");
        out_u64(index);
        out_str(",\"password\":");
        out_json_string(text, n);
        out_str("}");
    }
    out_str("]}");
    return mn_return();
}
