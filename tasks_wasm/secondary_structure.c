/*
 * secondary_structure: Chou-Fasman prediction of a protein's secondary structure.
 *
 * Input: one protein sequence as text, one-letter amino-acid codes in either case. Whitespace
 * is ignored, and so is every line whose first non-whitespace character is '>' (FASTA
 * headers). The input may instead be a single JSON string ("MKV..."; whitespace around it
 * allowed), as in a JSON Lines file; its decoded text is then read by the same rules.
 * Output: {"length":N,"prediction":"..."} with one letter per residue: H (helix), E (strand),
 * C (coil; turns are reported as C).
 *
 * Errors (the subtask fails with task_error): any other character ("unknown residue 'X' at
 * position P", P counting residues from 1; a byte outside printable ASCII is named as 0xNN),
 * a sequence longer than 1,000,000 residues, or a malformed JSON string.
 *
 * THE RULES. Pa, Pb, Pt and f0..f3 are the classic Chou-Fasman (1978) parameters, scaled
 * by 100 (P) and 1000 (f) to integers (table below); all arithmetic is on integers, and
 * "average > x" is evaluated as "sum > x * count". Residues are numbered 0..n-1. For a
 * residue range, sumPa, sumPb and sumPt are the sums over it.
 *
 *  1. Helix nuclei: every window of 6 consecutive residues in which at least 4 residues
 *     have Pa > 100.
 *  2. Helix extension: a nucleus [s, e) grows to the right while e < n and the 4 residues
 *     e-3..e have sumPa >= 400, taking in residue e each time; then to the left while s > 0
 *     and the 4 residues s-1..s+2 have sumPa >= 400, taking in residue s-1 each time.
 *  3. Helix acceptance: the grown segment [s, e) is a helix candidate when
 *     sumPa > 103 * (e - s) and sumPa > sumPb. Every nucleus is grown and tested on its own;
 *     a residue is helical when it lies in at least one accepted segment.
 *  4. Strands: the same three steps with Pb in place of Pa: windows of 5 residues with at
 *     least 3 having Pb > 100, extension while the 4-residue sumPb >= 400, acceptance when
 *     sumPb > 105 * (e - s) and sumPb > sumPa.
 *  5. Overlaps: each maximal run of consecutive residues that are both helical and strand
 *     is resolved as a whole: H when sumPa >= sumPb over the run, else E.
 *  6. Turns: the 4 residues i..i+3 form a turn when
 *     f0(r[i]) * f1(r[i+1]) * f2(r[i+2]) * f3(r[i+3]) > 75,000,000 (0.000075 unscaled),
 *     sumPt > 400, sumPt > sumPa and sumPt > sumPb. Turn residues are C, whatever steps
 *     1-5 said.
 *  7. Everything else is C.
 *
 * Steps 1-3 grow every nucleus independently. Doing that naively is quadratic in a long
 * helical stretch, so the code precomputes, for each position, the nearest 4-residue window
 * below the threshold on either side: each nucleus then grows in constant time, giving
 * exactly the segments the step-by-step rule would.
 */
#include "meshnode_task.h"

#define MAX_RESIDUES 1000000u

/* Classic Chou-Fasman conformational parameters (x100) and turn frequencies f(i)..f(i+3) (x1000). */
static const struct {
    int16_t pa, pb, pt;
    int16_t f[4];
} CF[26] = {
    ['A' - 'A'] = {142,  83,  66, { 60,  76,  35,  58}},
    ['R' - 'A'] = { 98,  93,  95, { 70, 106,  99,  85}},
    ['N' - 'A'] = { 67,  89, 156, {161,  83, 191,  91}},
    ['D' - 'A'] = {101,  54, 146, {147, 110, 179,  81}},
    ['C' - 'A'] = { 70, 119, 119, {149,  50, 117, 128}},
    ['Q' - 'A'] = {111, 110,  98, { 74,  98,  37,  98}},
    ['E' - 'A'] = {151,  37,  74, { 56,  60,  77,  64}},
    ['G' - 'A'] = { 57,  75, 156, {102,  85, 190, 152}},
    ['H' - 'A'] = {100,  87,  95, {140,  47,  93,  54}},
    ['I' - 'A'] = {108, 160,  47, { 43,  34,  13,  56}},
    ['L' - 'A'] = {121, 130,  59, { 61,  25,  36,  70}},
    ['K' - 'A'] = {114,  74, 101, { 55, 115,  72,  95}},
    ['M' - 'A'] = {145, 105,  60, { 68,  82,  14,  55}},
    ['F' - 'A'] = {113, 138,  60, { 59,  41,  65,  65}},
    ['P' - 'A'] = { 57,  55, 152, {102, 301,  34,  68}},
    ['S' - 'A'] = { 77,  75, 143, {120, 139, 125, 106}},
    ['T' - 'A'] = { 83, 119,  96, { 86, 108,  65,  79}},
    ['W' - 'A'] = {108, 137,  96, { 77,  13,  64, 167}},
    ['Y' - 'A'] = { 69, 147, 114, { 82,  65, 114, 125}},
    ['V' - 'A'] = {106, 170,  50, { 62,  48,  28,  53}},
};

#define NO_POS 0xFFFFFFFFu

static bool is_space(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

/* Sum of v[a..b) from a prefix-sum array. */
static uint32_t range_sum(const uint32_t *prefix, uint32_t a, uint32_t b) { return prefix[b] - prefix[a]; }

/*
 * Steps 1-3 for one kind of structure: marks mark[i] = 1 for every residue in an accepted
 * segment. `own` and `other` are prefix sums of the structure's propensity and of the rival
 * one; `prop` is the per-residue propensity.
 */
static void find_segments(const uint16_t *prop, const uint32_t *own, const uint32_t *other, uint32_t n,
                          uint32_t window, uint32_t formers_needed, uint32_t accept_avg, uint8_t *mark) {
    if (n < window)
        return;
    /* Windows q = 0..n-4 cover residues q..q+3. next_low[q]: the first window >= q whose sum
       is below 400; prev_low[q]: the last window <= q below 400 (NO_POS: none). */
    uint32_t nw = n - 3;
    uint32_t *next_low = mn_alloc(nw * 4), *prev_low = mn_alloc(nw * 4);
    int32_t *delta = mn_alloc((n + 1) * 4); /* +1 where a segment starts, -1 past its end */
    for (uint32_t q = 0; q < nw; q++)
        prev_low[q] = range_sum(own, q, q + 4) < 400 ? q : q ? prev_low[q - 1] : NO_POS;
    for (uint32_t q = nw; q-- > 0;)
        next_low[q] = range_sum(own, q, q + 4) < 400 ? q : q + 1 < nw ? next_low[q + 1] : NO_POS;
    for (uint32_t i = 0; i <= n; i++)
        delta[i] = 0;

    int32_t formers = 0; /* residues with propensity > 100 in the current window */
    for (uint32_t i = 0; i < window; i++)
        formers += prop[i] > 100;
    for (uint32_t s0 = 0;; s0++) { /* nucleus [s0, s0 + window) */
        uint32_t e0 = s0 + window;
        if (formers >= (int32_t)formers_needed) {
            /* Right: stop at the first residue e >= e0 whose window e-3..e is low. */
            uint32_t low = e0 - 3 < nw ? next_low[e0 - 3] : NO_POS;
            uint32_t e = low == NO_POS ? n : low + 3;
            /* Left: stop where window s-1..s+2 is low, i.e. s = (last low window < s0) + 1. */
            uint32_t s = s0 == 0 || prev_low[s0 - 1] == NO_POS ? 0 : prev_low[s0 - 1] + 1;
            uint32_t sum = range_sum(own, s, e);
            if (sum > accept_avg * (e - s) && sum > range_sum(other, s, e)) {
                delta[s]++;
                delta[e]--;
            }
        }
        if (e0 == n)
            break;
        formers += (prop[e0] > 100) - (prop[s0] > 100);
    }
    int32_t depth = 0;
    for (uint32_t i = 0; i < n; i++)
        mark[i] = (depth += delta[i]) > 0;
}

static void predict(const uint8_t *seq, uint32_t n, uint8_t *out) {
    uint16_t *pa = mn_alloc(n * 2 + 2), *pb = mn_alloc(n * 2 + 2);
    uint32_t *sa = mn_alloc((n + 1) * 4), *sb = mn_alloc((n + 1) * 4), *st = mn_alloc((n + 1) * 4);
    uint8_t *helix = mn_alloc(n + 1), *strand = mn_alloc(n + 1);
    sa[0] = sb[0] = st[0] = 0;
    for (uint32_t i = 0; i < n; i++) {
        pa[i] = (uint16_t)CF[seq[i]].pa;
        pb[i] = (uint16_t)CF[seq[i]].pb;
        sa[i + 1] = sa[i] + pa[i];
        sb[i + 1] = sb[i] + pb[i];
        st[i + 1] = st[i] + (uint32_t)CF[seq[i]].pt;
        helix[i] = strand[i] = 0;
        out[i] = 'C';
    }
    find_segments(pa, sa, sb, n, 6, 4, 103, helix);
    find_segments(pb, sb, sa, n, 5, 3, 105, strand);

    for (uint32_t i = 0; i < n;) {
        if (helix[i] && strand[i]) { /* a run of overlap, resolved as a whole */
            uint32_t j = i;
            while (j < n && helix[j] && strand[j])
                j++;
            char c = range_sum(sa, i, j) >= range_sum(sb, i, j) ? 'H' : 'E';
            for (; i < j; i++)
                out[i] = (uint8_t)c;
        } else {
            out[i] = helix[i] ? 'H' : strand[i] ? 'E' : 'C';
            i++;
        }
    }

    for (uint32_t i = 0; i + 4 <= n; i++) {
        int64_t p = (int64_t)CF[seq[i]].f[0] * CF[seq[i + 1]].f[1] * CF[seq[i + 2]].f[2] * CF[seq[i + 3]].f[3];
        uint32_t t = range_sum(st, i, i + 4);
        if (p > 75000000 && t > 400 && t > range_sum(sa, i, i + 4) && t > range_sum(sb, i, i + 4))
            for (uint32_t j = i; j < i + 4; j++)
                out[j] = 'C';
    }
}

MESHNODE_EXPORT(run) int64_t run(const uint8_t *in, uint32_t len) {
    const uint8_t *text = in;
    uint32_t text_len = len, i = 0;
    while (i < len && is_space(in[i]))
        i++;
    if (i < len && in[i] == '"') { /* a JSON string */
        mn_span v;
        uint8_t *decoded = mn_alloc(len);
        if (!mn_json_parse(in, len, &v) || !mn_json_is_string(v) || !mn_json_str(v, decoded, &text_len))
            return mn_error("input starts with '\"' but is not a valid JSON string");
        text = decoded;
    }

    /* Residue codes 0..25, at most one per input byte. */
    uint8_t *seq = mn_alloc(text_len + 1);
    uint32_t n = 0;
    bool line_start = true;
    for (i = 0; i < text_len; i++) {
        uint8_t c = text[i];
        if (c == '\n') {
            line_start = true;
            continue;
        }
        if (is_space(c))
            continue;
        if (line_start && c == '>') { /* FASTA header: skip the rest of the line */
            while (i + 1 < text_len && text[i + 1] != '\n')
                i++;
            continue;
        }
        line_start = false;
        uint8_t u = c >= 'a' && c <= 'z' ? (uint8_t)(c - 'a' + 'A') : c;
        if (u < 'A' || u > 'Z' || !CF[u - 'A'].pa) {
            static const char hex[] = "0123456789ABCDEF";
            out_error_begin();
            out_str("unknown residue ");
            if (c > 0x20 && c < 0x7F) {
                uint8_t quoted[3] = {'\'', c, '\''};
                out_bytes(quoted, 3);
            } else {
                uint8_t byte[4] = {'0', 'x', (uint8_t)hex[c >> 4], (uint8_t)hex[c & 15]};
                out_bytes(byte, 4);
            }
            out_str(" at position ");
            out_u64((uint64_t)n + 1);
            return out_error_end();
        }
        if (n == MAX_RESIDUES)
            return mn_error("sequence longer than 1000000 residues");
        seq[n++] = (uint8_t)(u - 'A');
    }

    out_str("{\"length\":");
    out_u64(n);
    out_str(",\"prediction\":\"");
    uint8_t *prediction = out_extend(n);
    if (n)
        predict(seq, n, prediction);
    out_str("\"}");
    return mn_return();
}
