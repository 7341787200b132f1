/*
 * password_hash: find the candidates whose hash is a target: an unsalted SHA-256 digest, or a
 * salted PBKDF2-HMAC-SHA256 key as Django stores it.
 *
 * Input, one of:
 *   {"target":"<64 hex digits>","candidates":["pw1","pw2",...]}      one SHA-256 target
 *   {"targets":[T,...],"candidates":["pw1","pw2",...]}              any number of targets, each T
 *       {"sha256":"<64 hex digits>"}
 *       {"pbkdf2_sha256":{"iterations":N,"salt":"...","hash":"<32 bytes in hex or base64>"}}
 * Output:
 *   {"checked":N,"matches":[{"index":j,"password":"..."},...]}                for "target"
 *   {"checked":N,"matches":[{"target":i,"index":j,"password":"..."},...]}     for "targets"
 *
 * Each candidate is hashed as the UTF-8 bytes of its decoded JSON string (\uXXXX escapes,
 * surrogate pairs included, become UTF-8); hex is accepted in either case. A pbkdf2_sha256
 * target is PBKDF2 (RFC 8018) with HMAC-SHA256 (RFC 2104): the candidate is the password, the
 * salt's UTF-8 bytes the salt, N the iteration count (1..10,000,000) and the key 32 bytes long,
 * exactly Python's hashlib.pbkdf2_hmac("sha256", password, salt, N). Django's
 * "pbkdf2_sha256$N$salt$hash" carries the same four things; its hash is base64 (standard
 * alphabet; the padding may be left out).
 *
 * N is the number of candidates. matches lists every (target, candidate) pair whose hash is
 * equal, in candidate order and, for one candidate, in target order; i and j count from 0 in
 * targets and candidates. The output JSON is compact, with non-ASCII text written as UTF-8 and
 * only '"', '\\' and control characters escaped (\b \f \n \r \t, else \u00xx).
 *
 * Cost: each candidate is hashed once with SHA-256 for all the sha256 targets together (they
 * are looked up by binary search), and takes about 2 * N SHA-256 blocks for each pbkdf2_sha256
 * target with N iterations, so a subtask's work grows as candidates x (sum of the iterations).
 *
 * Errors (the subtask fails with task_error): both or neither of target and targets; a
 * malformed target (the message names it, e.g. "targets[2].pbkdf2_sha256.iterations must be
 * an integer in 1..10000000"); candidates that are not an array of strings; a string holding
 * an unpaired surrogate (it has no UTF-8 form).
 */
#include "meshnode_task.h"

#define MAX_ITERATIONS 10000000u

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

static const uint32_t IV[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                               0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

static uint32_t rotr(uint32_t x, int n) { return x >> n | x << (32 - n); }

/* One compression of a block given as 16 big-endian words. */
static void sha256_words(uint32_t h[8], const uint32_t m[16]) {
    uint32_t w[64];
    for (int t = 0; t < 16; t++)
        w[t] = m[t];
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

static void sha256_block(uint32_t h[8], const uint8_t *block) {
    uint32_t m[16];
    for (int t = 0; t < 16; t++)
        m[t] = (uint32_t)block[4 * t] << 24 | (uint32_t)block[4 * t + 1] << 16 |
               (uint32_t)block[4 * t + 2] << 8 | block[4 * t + 3];
    sha256_words(h, m);
}

/* A message hashed in pieces: h after every whole block so far, and the bytes of the next. */
typedef struct {
    uint32_t h[8];
    uint8_t block[64];
    uint32_t fill;
    uint64_t total;
} sha256_ctx;

static void sha256_init(sha256_ctx *c) {
    for (int i = 0; i < 8; i++)
        c->h[i] = IV[i];
    c->fill = 0;
    c->total = 0;
}

static void sha256_update(sha256_ctx *c, const uint8_t *p, uint32_t n) {
    c->total += n;
    while (n) {
        uint32_t take = 64 - c->fill < n ? 64 - c->fill : n;
        __builtin_memcpy(c->block + c->fill, p, take);
        c->fill += take;
        p += take;
        n -= take;
        if (c->fill == 64) {
            sha256_block(c->h, c->block);
            c->fill = 0;
        }
    }
}

/* Padding: 0x80, zeros, then the length in bits as a 64-bit big-endian number, which takes
   one more block, or two when fewer than 9 bytes are left in this one. */
static void sha256_final(sha256_ctx *c, uint32_t digest[8]) {
    uint64_t bits = c->total * 8;
    c->block[c->fill++] = 0x80;
    if (c->fill > 56) {
        for (uint32_t i = c->fill; i < 64; i++)
            c->block[i] = 0;
        sha256_block(c->h, c->block);
        c->fill = 0;
    }
    for (uint32_t i = c->fill; i < 56; i++)
        c->block[i] = 0;
    for (int i = 0; i < 8; i++)
        c->block[63 - i] = (uint8_t)(bits >> (8 * i));
    sha256_block(c->h, c->block);
    for (int i = 0; i < 8; i++)
        digest[i] = c->h[i];
}

static void sha256(const uint8_t *msg, uint32_t len, uint32_t digest[8]) {
    sha256_ctx c;
    sha256_init(&c);
    sha256_update(&c, msg, len);
    sha256_final(&c, digest);
}

/* HMAC-SHA256 (RFC 2104) and PBKDF2 (RFC 8018). */

/* The states after the key's inner (0x36) and outer (0x5c) pad blocks: what every HMAC with
   that key starts from, so a password's pads are hashed once, not once per iteration. */
typedef struct {
    uint32_t inner[8], outer[8];
} hmac_key;

static void hmac_init(hmac_key *k, const uint8_t *key, uint32_t len) {
    uint8_t pad[64] = {0};
    if (len > 64) { /* a long key is replaced by its digest */
        uint32_t d[8];
        sha256(key, len, d);
        for (int i = 0; i < 32; i++)
            pad[i] = (uint8_t)(d[i / 4] >> (24 - 8 * (i % 4)));
    } else {
        __builtin_memcpy(pad, key, len);
    }
    for (int i = 0; i < 64; i++)
        pad[i] ^= 0x36;
    for (int i = 0; i < 8; i++)
        k->inner[i] = k->outer[i] = IV[i];
    sha256_block(k->inner, pad);
    for (int i = 0; i < 64; i++)
        pad[i] ^= 0x36 ^ 0x5c;
    sha256_block(k->outer, pad);
}

/* From `state` (after a 64-byte pad block), the digest of a further 32-byte message given as
   8 words: one block, the message then its padding for 96 bytes in all. */
static void sha256_after_pad(const uint32_t state[8], const uint32_t msg[8], uint32_t digest[8]) {
    uint32_t m[16] = {0};
    for (int i = 0; i < 8; i++) {
        m[i] = msg[i];
        digest[i] = state[i];
    }
    m[8] = 0x80000000u;
    m[15] = 96 * 8;
    sha256_words(digest, m);
}

/* The first 32 bytes of PBKDF2-HMAC-SHA256 (block 1), as 8 big-endian words. */
static void pbkdf2_sha256(const hmac_key *k, const uint8_t *salt, uint32_t salt_len, uint32_t iterations,
                          uint32_t key[8]) {
    static const uint8_t block_index[4] = {0, 0, 0, 1};
    uint32_t u[8], inner[8];
    sha256_ctx c; /* U1 = HMAC(password, salt || INT(1)) */
    for (int i = 0; i < 8; i++)
        c.h[i] = k->inner[i];
    c.fill = 0;
    c.total = 64;
    sha256_update(&c, salt, salt_len);
    sha256_update(&c, block_index, 4);
    sha256_final(&c, inner);
    sha256_after_pad(k->outer, inner, u);
    for (int i = 0; i < 8; i++)
        key[i] = u[i];
    for (uint32_t n = 1; n < iterations; n++) { /* U(n+1) = HMAC(password, U(n)) */
        sha256_after_pad(k->inner, u, inner);
        sha256_after_pad(k->outer, inner, u);
        for (int i = 0; i < 8; i++)
            key[i] ^= u[i];
    }
}

/* Targets. */

typedef struct {
    uint32_t digest[8];
    uint32_t target; /* its position in the input */
} sha_target;

typedef struct {
    uint32_t key[8];
    uint32_t target, iterations, salt_len;
    uint8_t *salt;
} pbkdf2_target;

/* 32 bytes as 8 big-endian words. */
static void words_of(const uint8_t bytes[32], uint32_t words[8]) {
    for (int i = 0; i < 8; i++)
        words[i] = (uint32_t)bytes[4 * i] << 24 | (uint32_t)bytes[4 * i + 1] << 16 |
                   (uint32_t)bytes[4 * i + 2] << 8 | bytes[4 * i + 3];
}

static bool parse_hex32(const uint8_t *s, uint32_t n, uint32_t words[8]) {
    uint8_t bytes[32];
    if (n != 64)
        return false;
    for (int i = 0; i < 32; i++) {
        int hi = mn_hex_digit(s[2 * i]), lo = mn_hex_digit(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        bytes[i] = (uint8_t)(hi << 4 | lo);
    }
    words_of(bytes, words);
    return true;
}

static int base64_digit(uint8_t c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* 32 bytes in hex (64 digits) or base64 (43 digits, then "=" or nothing). */
static bool parse_key32(const uint8_t *s, uint32_t n, uint32_t words[8]) {
    if (n == 64)
        return parse_hex32(s, n, words);
    if (n == 44 && s[43] == '=')
        n = 43;
    if (n != 43)
        return false;
    uint8_t bytes[32];
    uint32_t bits = 0, have = 0, out = 0;
    for (uint32_t i = 0; i < 43; i++) {
        int v = base64_digit(s[i]);
        if (v < 0)
            return false;
        bits = bits << 6 | (uint32_t)v;
        have += 6;
        if (have >= 8) {
            have -= 8;
            bytes[out++] = (uint8_t)(bits >> have);
        }
    }
    words_of(bytes, words);
    return true;
}

static bool sha_less(const sha_target *a, const sha_target *b) {
    for (int i = 0; i < 8; i++)
        if (a->digest[i] != b->digest[i])
            return a->digest[i] < b->digest[i];
    return a->target < b->target;
}

/* Heapsort by (digest, target): equal digests end up together, in target order. */
static void sift_down(sha_target *v, uint32_t root, uint32_t n) {
    for (uint32_t child; (child = 2 * root + 1) < n; root = child) {
        if (child + 1 < n && sha_less(&v[child], &v[child + 1]))
            child++;
        if (!sha_less(&v[root], &v[child]))
            return;
        sha_target t = v[root];
        v[root] = v[child];
        v[child] = t;
    }
}

static void sort_sha_targets(sha_target *v, uint32_t n) {
    for (uint32_t i = n / 2; i-- > 0;)
        sift_down(v, i, n);
    for (uint32_t end = n; end-- > 1;) {
        sha_target t = v[0];
        v[0] = v[end];
        v[end] = t;
        sift_down(v, 0, end);
    }
}

/* The first sha target whose digest is not below `d`. */
static uint32_t lower_bound(const sha_target *v, uint32_t n, const uint32_t d[8]) {
    sha_target probe;
    for (int i = 0; i < 8; i++)
        probe.digest[i] = d[i];
    probe.target = 0;
    uint32_t lo = 0, hi = n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (sha_less(&v[mid], &probe))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static bool same_digest(const uint32_t a[8], const uint32_t b[8]) {
    uint32_t diff = 0;
    for (int i = 0; i < 8; i++)
        diff |= a[i] ^ b[i];
    return diff == 0;
}

/* The parsed targets: the sha256 ones sorted by digest, the pbkdf2 ones in input order. */
typedef struct {
    sha_target *sha;
    pbkdf2_target *pbkdf2;
    uint32_t n_sha, n_pbkdf2;
} targets;

static int64_t target_error(uint32_t i, const char *what) {
    out_error_begin();
    out_str("targets[");
    out_u64(i);
    out_str("]");
    out_str(what);
    return out_error_end();
}

/* Reads the "targets" array; returns 0, or what run should return when a target is bad. */
static int64_t parse_targets(mn_span list, uint8_t *text, targets *t) {
    mn_json_iter it;
    mn_span item, spec, field;
    uint32_t count = 0, n;
    if (!mn_json_iter_array(list, &it))
        return mn_fail("targets must be an array");
    while (mn_json_next(&it, &item))
        count++;
    t->sha = mn_alloc(count * (uint32_t)sizeof(sha_target));
    t->pbkdf2 = mn_alloc(count * (uint32_t)sizeof(pbkdf2_target));
    t->n_sha = t->n_pbkdf2 = 0;
    mn_json_iter_array(list, &it);
    for (uint32_t i = 0; mn_json_next(&it, &item); i++) {
        if (mn_json_get(item, "sha256", &spec)) {
            sha_target *s = &t->sha[t->n_sha++];
            s->target = i;
            if (!mn_json_str(spec, text, &n) || !parse_hex32(text, n, s->digest))
                return target_error(i, ".sha256 must be a string of 64 hex digits");
        } else if (mn_json_get(item, "pbkdf2_sha256", &spec) && mn_json_is_object(spec)) {
            pbkdf2_target *p = &t->pbkdf2[t->n_pbkdf2++];
            uint64_t iterations;
            p->target = i;
            if (!mn_json_get(spec, "iterations", &field) || !mn_json_u64(field, &iterations) || iterations < 1 ||
                iterations > MAX_ITERATIONS)
                return target_error(i, ".pbkdf2_sha256.iterations must be an integer in 1..10000000");
            p->iterations = (uint32_t)iterations;
            if (!mn_json_get(spec, "salt", &field) || !mn_json_str(field, text, &n))
                return target_error(i, ".pbkdf2_sha256.salt must be a string");
            p->salt = mn_alloc(n);
            p->salt_len = n;
            __builtin_memcpy(p->salt, text, n);
            if (!mn_json_get(spec, "hash", &field) || !mn_json_str(field, text, &n) || !parse_key32(text, n, p->key))
                return target_error(i, ".pbkdf2_sha256.hash must be 32 bytes in hex (64 digits) or base64");
        } else {
            return target_error(i, " must be {\"sha256\":...} or {\"pbkdf2_sha256\":{...}}");
        }
    }
    sort_sha_targets(t->sha, t->n_sha);
    return 0;
}

/* The task. */

static void out_match(bool several, uint32_t target, uint64_t index, const uint8_t *password, uint32_t n,
                      uint64_t *matches) {
    out_str(*matches ? ",{" : "{");
    ++*matches;
    if (several) {
        out_str("\"target\":");
        out_u64(target);
        out_str(",");
    }
    out_str("\"index\":");
    out_u64(index);
    out_str(",\"password\":");
    out_json_string(password, n);
    out_str("}");
}

MESHNODE_EXPORT(run) int64_t run(const uint8_t *in, uint32_t len) {
    mn_span obj, target, list, candidates, item;
    if (!mn_input_object(in, len, &obj))
        return mn_return();

    /* No decoded string is longer than the input it came from, so one scratch buffer of
       the input's size serves every target and candidate. */
    uint8_t *text = mn_alloc(len);
    uint32_t n;
    targets t;
    bool one = mn_json_get(obj, "target", &target), several = mn_json_get(obj, "targets", &list);
    if (one && several)
        return mn_fail("give target or targets, not both");
    if (one) {
        t.sha = mn_alloc(sizeof(sha_target));
        t.n_sha = 1;
        t.n_pbkdf2 = 0;
        t.sha->target = 0;
        if (!mn_json_str(target, text, &n) || !parse_hex32(text, n, t.sha->digest))
            return mn_fail("target must be a string of 64 hex digits");
    } else if (several) {
        int64_t failed = parse_targets(list, text, &t);
        if (failed)
            return failed;
    } else {
        return mn_fail("missing key target (or targets)");
    }
    if (!mn_json_get(obj, "candidates", &candidates))
        return mn_fail("missing key candidates");

    /* Count first: the count leads the output. */
    mn_json_iter it;
    uint64_t count = 0, index = 0, matches = 0;
    if (!mn_json_iter_array(candidates, &it))
        return mn_fail("candidates must be an array of strings");
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
        /* The sha256 targets equal to this digest, in target order, merged with the
           pbkdf2 targets that match, also in target order. */
        uint32_t first = 0, last = 0;
        if (t.n_sha) {
            uint32_t digest[8];
            sha256(text, n, digest);
            first = last = lower_bound(t.sha, t.n_sha, digest);
            while (last < t.n_sha && same_digest(t.sha[last].digest, digest))
                last++;
        }
        if (t.n_pbkdf2) {
            hmac_key key;
            hmac_init(&key, text, n);
            for (uint32_t k = 0; k < t.n_pbkdf2; k++) {
                pbkdf2_target *p = &t.pbkdf2[k];
                uint32_t derived[8];
                pbkdf2_sha256(&key, p->salt, p->salt_len, p->iterations, derived);
                if (!same_digest(derived, p->key))
                    continue;
                for (; first < last && t.sha[first].target < p->target; first++)
                    out_match(several, t.sha[first].target, index, text, n, &matches);
                out_match(several, p->target, index, text, n, &matches);
            }
        }
        for (; first < last; first++)
            out_match(several, t.sha[first].target, index, text, n, &matches);
    }
    out_str("]}");
    return mn_return();
}
