/*
 * meshnode_task.h - write a meshnode task in C.
 *
 * THE TASK ABI
 *
 * A task is a WebAssembly module with no imports that exports:
 *
 *   memory                           its linear memory
 *   alloc(len: i32) -> i32           a pointer to `len` writable bytes, or 0 when memory
 *                                    cannot grow (the host caps memory, so memory.grow can fail)
 *   run(ptr: i32, len: i32) -> i64   the entry point; returns ((i64)out_ptr << 32) | out_len,
 *                                    or, to fail the subtask, ((i64)msg_ptr << 32) |
 *                                    0x80000000 | msg_len (see Errors)
 *
 * For every subtask the host makes a fresh instance, calls alloc(len), writes the input
 * bytes there, calls run(ptr, len) and reads out_len bytes at out_ptr. An instance lives for
 * one call only, so a bump allocator that never frees is all a task needs.
 *
 * Results must be bit-for-bit reproducible, because replicas on different peers are compared
 * by hash. So a task has no imports (no clock, no randomness, no I/O), no threads and no
 * relaxed SIMD. Floating point is plain IEEE double with round-to-nearest: WebAssembly has no
 * fused multiply-add, this header turns contraction off, and tasks are never built with
 * -ffast-math, so `a * b + c` always rounds twice and sums keep the order they are written in.
 *
 * Errors: given input it cannot use, a task fails the subtask with a message, mn_fail("..."):
 * run returns the message's pointer and length with bit 31 of the length set (MN_FAILED; no
 * output can be that long, since a job's max_output is at most 1 GiB). The subtask then has
 * no output: it fails with the code task_error and that message (UTF-8; the host keeps the
 * first 500 characters, on one line), and exec and submit count it as failed. A task traps
 * (__builtin_trap) only when an allocation fails; the host sees the trap, notices that memory
 * is at its limit and reports a memory-limit failure.
 *
 * USING THIS HEADER
 *
 * Include it in exactly one .c file (it defines the exported `alloc`) and write `run`:
 *
 *     #include "meshnode_task.h"
 *
 *     MESHNODE_EXPORT(run) int64_t run(const uint8_t *in, uint32_t len) {
 *         mn_span obj;
 *         uint64_t n;
 *         if (!mn_input_object(in, len, &obj) || !mn_get_u64(obj, "n", 0, 1000, &n))
 *             return mn_return();             // fails the subtask with the helper's message
 *         out_str("{\"square\":");
 *         out_u64(n * n);
 *         out_str("}");
 *         return mn_return();
 *     }
 *
 * Build it with `python -m meshnode build task.c -o task.wasm`.
 *
 * The helpers come in four groups: memory (mn_alloc), output (out_*, mn_return, and mn_fail
 * to fail the subtask), binary input (mn_u32le, mn_f64le) and JSON input (mn_json_*,
 * mn_input_object, mn_get_*). Everything
 * except `alloc` is static, so what a task does not use costs nothing.
 */
#ifndef MESHNODE_TASK_H
#define MESHNODE_TASK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#pragma STDC FP_CONTRACT OFF

/* Export a function from the module under its C name: MESHNODE_EXPORT(run) int64_t run(...) */
#define MESHNODE_EXPORT(name) __attribute__((export_name(#name)))

/* ------------------------------------------------------------------------------------------ */
/* Memory                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* Set by the linker: the first byte after the stack and the static data. */
extern unsigned char __heap_base;

/* First free byte of the heap; 0 until the first allocation. */
static uintptr_t mn__heap_top;

/* Grows linear memory so that addresses below `end` are valid. False if memory.grow fails. */
static inline bool mn__cover(uint64_t end) {
    uint64_t have = (uint64_t)__builtin_wasm_memory_size(0) << 16;
    if (end <= have)
        return true;
    uint64_t pages = (end - have + 0xFFFF) >> 16;
    return __builtin_wasm_memory_grow(0, (size_t)pages) != (size_t)-1;
}

/* The exported allocator: 8-byte aligned bump allocation; 0 when memory cannot grow. */
MESHNODE_EXPORT(alloc) void *alloc(uint32_t len) {
    if (!mn__heap_top)
        mn__heap_top = (uintptr_t)&__heap_base;
    uint64_t p = ((uint64_t)mn__heap_top + 7) & ~(uint64_t)7;
    uint64_t end = p + len;
    if (end > 0xFFFFFFFFu || !mn__cover(end)) /* past what wasm32 can address, or over the limit */
        return 0;
    mn__heap_top = (uintptr_t)end;
    return (void *)(uintptr_t)p;
}

/* alloc() for the task's own use: traps instead of returning 0. */
static inline void *mn_alloc(uint32_t len) {
    void *p = alloc(len);
    if (!p)
        __builtin_trap();
    return p;
}

/* Byte loops rather than libc calls: a freestanding module has no libc to link against. */
static inline uint32_t mn_strlen(const char *s) {
    uint32_t n = 0;
    while (s[n])
        n++;
    return n;
}

static inline bool mn_memeq(const void *a, const void *b, uint32_t n) {
    const uint8_t *x = (const uint8_t *)a, *y = (const uint8_t *)b;
    for (uint32_t i = 0; i < n; i++)
        if (x[i] != y[i])
            return false;
    return true;
}

/* ------------------------------------------------------------------------------------------ */
/* Output                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/*
 * The output is one growable buffer on the heap. While it is the newest allocation it grows
 * in place; otherwise it moves to a fresh block (the old one is simply abandoned).
 */
static struct {
    uint8_t *data;
    uint32_t len, cap;
} mn__out;

static inline bool mn__out_resize(uint64_t cap) {
    if (cap > 0xFFFFFFF8u)
        return false;
    uint8_t *d = mn__out.data;
    if (d && (uintptr_t)(d + mn__out.cap) == mn__heap_top) {
        uint64_t end = (uint64_t)(uintptr_t)d + cap;
        if (end > 0xFFFFFFFFu || !mn__cover(end))
            return false;
        mn__heap_top = (uintptr_t)end;
    } else {
        d = (uint8_t *)alloc((uint32_t)cap);
        if (!d)
            return false;
        if (mn__out.len)
            __builtin_memcpy(d, mn__out.data, mn__out.len);
        mn__out.data = d;
    }
    mn__out.cap = (uint32_t)cap;
    return true;
}

/* Appends `n` uninitialised bytes to the output and returns where they start. */
static inline uint8_t *out_extend(uint32_t n) {
    uint64_t need = (uint64_t)mn__out.len + n;
    if (need > mn__out.cap) {
        /* Double, so that appending byte by byte stays linear; if memory is too tight for
           that, settle for exactly what is needed before giving up. */
        uint64_t want = 2 * (uint64_t)mn__out.cap;
        if (want < need)
            want = need;
        if (want < 256)
            want = 256;
        if (!mn__out_resize((want + 7) & ~(uint64_t)7) && !mn__out_resize((need + 7) & ~(uint64_t)7))
            __builtin_trap();
    }
    uint8_t *p = mn__out.data + mn__out.len;
    mn__out.len = (uint32_t)need;
    return p;
}

static inline void out_reset(void) { mn__out.len = 0; }

static inline void out_byte(uint8_t b) { *out_extend(1) = b; }

static inline void out_bytes(const void *p, uint32_t n) {
    if (n)
        __builtin_memcpy(out_extend(n), p, n);
}

/* A C string, written as it is (no JSON escaping). */
static inline void out_str(const char *s) { out_bytes(s, mn_strlen(s)); }

/* WebAssembly is little-endian, so copying a value's bytes writes it little-endian. */
static inline void out_u32le(uint32_t v) { __builtin_memcpy(out_extend(4), &v, 4); }
static inline void out_f64le(double v) { __builtin_memcpy(out_extend(8), &v, 8); }

/* Decimal text. */
static inline void out_u64(uint64_t v) {
    char buf[20];
    int i = 20;
    do {
        buf[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    out_bytes(buf + i, (uint32_t)(20 - i));
}

static inline void out_i64(int64_t v) {
    if (v < 0) {
        out_byte('-');
        out_u64(0 - (uint64_t)v); /* also right for INT64_MIN */
    } else {
        out_u64((uint64_t)v);
    }
}

/*
 * The contents of a JSON string (no quotes). Escapes exactly what JSON requires: '"', '\\'
 * and the control characters, as \b \f \n \r \t or \u00xx (lower-case hex). Every other
 * byte, UTF-8 included, is copied as it is. This is also what Python's
 * json.dumps(..., ensure_ascii=False) writes.
 */
static inline void out_json_chars(const void *s, uint32_t n) {
    static const char hex[] = "0123456789abcdef";
    const uint8_t *p = (const uint8_t *)s;
    uint32_t run = 0; /* start of the pending run of bytes that need no escape */
    for (uint32_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        out_bytes(p + run, i - run);
        run = i + 1;
        out_byte('\\');
        switch (c) {
        case '"': case '\\': out_byte(c); break;
        case '\b': out_byte('b'); break;
        case '\f': out_byte('f'); break;
        case '\n': out_byte('n'); break;
        case '\r': out_byte('r'); break;
        case '\t': out_byte('t'); break;
        default:
            out_str("u00");
            out_byte((uint8_t)hex[c >> 4]);
            out_byte((uint8_t)hex[c & 15]);
        }
    }
    out_bytes(p + run, n - run);
}

/* A complete JSON string: quotes plus escaped contents. */
static inline void out_json_string(const void *s, uint32_t n) {
    out_byte('"');
    out_json_chars(s, n);
    out_byte('"');
}

/*
 * Failing a subtask. mn_fail("bad x") discards the output, makes "bad x" the subtask's failure
 * message and returns what `run` should return: the subtask fails with task_error, "bad x".
 * To build a message from parts, call out_error_begin(), write the parts with the out_*
 * functions (plain text, nothing is escaped; out_u64 for numbers) and `return out_error_end();`.
 * mn_error is mn_fail under its older name.
 */

/* Bit 31 of the length `run` returns: the bytes it points at are a failure message. */
#define MN_FAILED 0x80000000u

/* Set by out_error_begin: the output buffer now holds a failure message, not output. */
static bool mn__failing;

static inline int64_t mn_fail(const char *msg);

/* The value `run` returns: where the output (or the failure message) is and how long. */
static inline int64_t mn_return(void) {
    uint64_t len = mn__out.len;
    if (mn__failing)
        len = (len < MN_FAILED ? len : MN_FAILED - 1) | MN_FAILED; /* the host keeps 500 characters */
    else if (len >= MN_FAILED) /* its length would read as a failure: no job takes that much anyway */
        return mn_fail("the output is 2 GiB or more, over any job's max_output");
    return (int64_t)(((uint64_t)(uintptr_t)mn__out.data << 32) | len);
}

/* Discards the output written so far: what follows is the failure message. */
static inline void out_error_begin(void) {
    out_reset();
    mn__failing = true;
}

/* Ends a message built from parts; returns what `run` should return. */
static inline int64_t out_error_end(void) { return mn_return(); }

static inline int64_t mn_fail(const char *msg) {
    out_error_begin();
    out_str(msg);
    return out_error_end();
}

static inline int64_t mn_error(const char *msg) { return mn_fail(msg); }

/* ------------------------------------------------------------------------------------------ */
/* Binary input                                                                               */
/* ------------------------------------------------------------------------------------------ */

/* Little-endian values at any address (memcpy: the input need not be aligned), the mirror of
 * out_u32le and out_f64le: a binary input carries every double exactly. */
static inline uint32_t mn_u32le(const uint8_t *p) {
    uint32_t v;
    __builtin_memcpy(&v, p, 4);
    return v;
}

static inline double mn_f64le(const uint8_t *p) {
    double v;
    __builtin_memcpy(&v, p, 8);
    return v;
}

/* ------------------------------------------------------------------------------------------ */
/* JSON input                                                                                 */
/* ------------------------------------------------------------------------------------------ */

/*
 * A small, strict JSON reader (RFC 8259) that works in place: a value is an mn_span of the
 * input's bytes and is decoded only when asked. mn_json_parse checks the whole document once;
 * the functions that then look inside a value (mn_json_get, mn_json_next) rely on that.
 * Nesting deeper than MN_JSON_MAX_DEPTH is rejected so that hostile input cannot exhaust
 * the stack. Strings must be valid UTF-8. Object keys are compared byte for byte, without
 * decoding escapes, and the first of duplicate keys wins.
 */
typedef struct {
    const uint8_t *ptr;
    uint32_t len;
} mn_span;

#define MN_JSON_MAX_DEPTH 64

static inline bool mn__isdigit(uint8_t c) { return c >= '0' && c <= '9'; }

static inline const uint8_t *mn__json_ws(const uint8_t *p, const uint8_t *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* The value of a hex digit in either case, or -1. */
static inline int mn_hex_digit(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Four hex digits at p (the XXXX of \uXXXX). */
static inline bool mn__json_u4(const uint8_t *p, const uint8_t *end, uint32_t *v) {
    if (end - p < 4)
        return false;
    uint32_t x = 0;
    for (int i = 0; i < 4; i++) {
        int d = mn_hex_digit(p[i]);
        if (d < 0)
            return false;
        x = x << 4 | (uint32_t)d;
    }
    *v = x;
    return true;
}

/* Length of the well-formed UTF-8 sequence of 2 to 4 bytes at p, or 0: rejects overlong
   forms, surrogates (U+D800..U+DFFF) and code points past U+10FFFF, as RFC 3629 says. */
static inline uint32_t mn__utf8_len(const uint8_t *p, const uint8_t *end) {
    uint8_t c = p[0], lo = 0x80, hi = 0xBF; /* the range allowed for the second byte */
    uint32_t n;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        lo = c == 0xE0 ? 0xA0 : 0x80;
        hi = c == 0xED ? 0x9F : 0xBF;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        lo = c == 0xF0 ? 0x90 : 0x80;
        hi = c == 0xF4 ? 0x8F : 0xBF;
    } else {
        return 0;
    }
    if ((uint32_t)(end - p) < n || p[1] < lo || p[1] > hi)
        return 0;
    for (uint32_t i = 2; i < n; i++)
        if ((p[i] & 0xC0) != 0x80)
            return 0;
    return n;
}

/* The skip functions take p at the first byte of a token and return the byte after it,
   or NULL when the token is malformed. */
static inline const uint8_t *mn__json_skip_string(const uint8_t *p, const uint8_t *end) {
    uint32_t unused;
    for (p++; p < end; p++) {
        if (*p == '"')
            return p + 1;
        if (*p < 0x20)
            return NULL;
        if (*p >= 0x80) {
            uint32_t n = mn__utf8_len(p, end);
            if (!n)
                return NULL;
            p += n - 1;
            continue;
        }
        if (*p == '\\') {
            if (++p >= end)
                return NULL;
            switch (*p) {
            case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
                break;
            case 'u':
                if (!mn__json_u4(p + 1, end, &unused))
                    return NULL;
                p += 4;
                break;
            default:
                return NULL;
            }
        }
    }
    return NULL;
}

static inline const uint8_t *mn__json_skip_number(const uint8_t *p, const uint8_t *end) {
    if (p < end && *p == '-')
        p++;
    if (p < end && *p == '0')
        p++;
    else if (p < end && *p >= '1' && *p <= '9')
        while (p < end && mn__isdigit(*p))
            p++;
    else
        return NULL;
    if (p < end && *p == '.') {
        if (++p >= end || !mn__isdigit(*p))
            return NULL;
        while (p < end && mn__isdigit(*p))
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        if (++p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || !mn__isdigit(*p))
            return NULL;
        while (p < end && mn__isdigit(*p))
            p++;
    }
    return p;
}

static inline const uint8_t *mn__json_skip_literal(const uint8_t *p, const uint8_t *end, const char *lit) {
    uint32_t n = mn_strlen(lit);
    return (uint32_t)(end - p) >= n && mn_memeq(p, lit, n) ? p + n : NULL;
}

static const uint8_t *mn__json_skip_value(const uint8_t *p, const uint8_t *end, int depth) {
    if (p >= end)
        return NULL;
    switch (*p) {
    case '"':
        return mn__json_skip_string(p, end);
    case 't':
        return mn__json_skip_literal(p, end, "true");
    case 'f':
        return mn__json_skip_literal(p, end, "false");
    case 'n':
        return mn__json_skip_literal(p, end, "null");
    case '{':
    case '[': {
        uint8_t close = *p == '{' ? '}' : ']';
        if (depth >= MN_JSON_MAX_DEPTH)
            return NULL;
        p = mn__json_ws(p + 1, end);
        if (p < end && *p == close)
            return p + 1;
        for (;;) {
            if (close == '}') { /* a member starts with its key */
                if (p >= end || *p != '"' || !(p = mn__json_skip_string(p, end)))
                    return NULL;
                p = mn__json_ws(p, end);
                if (p >= end || *p != ':')
                    return NULL;
                p = mn__json_ws(p + 1, end);
            }
            if (!(p = mn__json_skip_value(p, end, depth + 1)))
                return NULL;
            p = mn__json_ws(p, end);
            if (p >= end)
                return NULL;
            if (*p == close)
                return p + 1;
            if (*p != ',')
                return NULL;
            p = mn__json_ws(p + 1, end);
        }
    }
    default:
        return mn__json_skip_number(p, end);
    }
}

/* Checks that in[0..len) is exactly one JSON value (whitespace around it is fine). */
static inline bool mn_json_parse(const uint8_t *in, uint32_t len, mn_span *value) {
    const uint8_t *end = in + len, *p = mn__json_ws(in, end);
    const uint8_t *q = mn__json_skip_value(p, end, 0);
    if (!q || mn__json_ws(q, end) != end)
        return false;
    value->ptr = p;
    value->len = (uint32_t)(q - p);
    return true;
}

static inline bool mn_json_is_object(mn_span v) { return v.len && v.ptr[0] == '{'; }
static inline bool mn_json_is_array(mn_span v) { return v.len && v.ptr[0] == '['; }
static inline bool mn_json_is_string(mn_span v) { return v.len && v.ptr[0] == '"'; }

/* Finds member `key` of a parsed object. False if `obj` is not an object or has no such key. */
static inline bool mn_json_get(mn_span obj, const char *key, mn_span *value) {
    if (!mn_json_is_object(obj))
        return false;
    const uint8_t *end = obj.ptr + obj.len, *p = mn__json_ws(obj.ptr + 1, end);
    uint32_t klen = mn_strlen(key);
    while (p < end && *p == '"') {
        const uint8_t *k = p + 1, *q = mn__json_skip_string(p, end);
        if (!q)
            return false;
        bool match = (uint32_t)(q - 1 - k) == klen && mn_memeq(k, key, klen);
        p = mn__json_ws(mn__json_ws(q, end) + 1, end); /* past the ':' */
        const uint8_t *v = p;
        if (!(p = mn__json_skip_value(p, end, 1)))
            return false;
        if (match) {
            value->ptr = v;
            value->len = (uint32_t)(p - v);
            return true;
        }
        p = mn__json_ws(p, end);
        if (p < end && *p == ',')
            p = mn__json_ws(p + 1, end);
    }
    return false;
}

/* Iterating over a parsed array:
       mn_json_iter it; mn_span item;
       if (mn_json_iter_array(arr, &it)) while (mn_json_next(&it, &item)) { ... } */
typedef struct {
    const uint8_t *p, *end;
} mn_json_iter;

static inline bool mn_json_iter_array(mn_span arr, mn_json_iter *it) {
    if (!mn_json_is_array(arr))
        return false;
    it->end = arr.ptr + arr.len - 1; /* the closing ']' */
    it->p = mn__json_ws(arr.ptr + 1, it->end);
    return true;
}

static inline bool mn_json_next(mn_json_iter *it, mn_span *item) {
    if (it->p >= it->end)
        return false;
    const uint8_t *q = mn__json_skip_value(it->p, it->end, 1);
    if (!q)
        return false;
    item->ptr = it->p;
    item->len = (uint32_t)(q - it->p);
    q = mn__json_ws(q, it->end);
    if (q < it->end && *q == ',')
        q = mn__json_ws(q + 1, it->end);
    it->p = q;
    return true;
}

/* A JSON integer: -?(0|[1-9][0-9]*), no fraction or exponent. Split into sign and magnitude. */
static inline bool mn__json_int(mn_span v, bool *neg, uint64_t *mag) {
    const uint8_t *p = v.ptr, *end = v.ptr + v.len;
    *neg = p < end && *p == '-';
    if (*neg)
        p++;
    if (p >= end || (*p == '0' && end - p > 1))
        return false;
    uint64_t m = 0;
    for (; p < end; p++) {
        if (!mn__isdigit(*p))
            return false;
        uint64_t d = (uint64_t)(*p - '0');
        if (m > (UINT64_MAX - d) / 10)
            return false; /* does not fit in 64 bits */
        m = m * 10 + d;
    }
    *mag = m;
    return true;
}

static inline bool mn_json_u64(mn_span v, uint64_t *out) {
    bool neg;
    uint64_t m;
    if (!mn__json_int(v, &neg, &m) || (neg && m))
        return false;
    *out = m;
    return true;
}

static inline bool mn_json_i64(mn_span v, int64_t *out) {
    bool neg;
    uint64_t m;
    if (!mn__json_int(v, &neg, &m) || m > (uint64_t)INT64_MAX + neg)
        return false;
    *out = neg ? (int64_t)(0 - m) : (int64_t)m;
    return true;
}

/* Code point -> UTF-8; returns the number of bytes written (at most 4). */
static inline uint32_t mn__utf8(uint8_t *o, uint32_t cp) {
    if (cp < 0x80) {
        o[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (uint8_t)(0xC0 | cp >> 6);
        o[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (uint8_t)(0xE0 | cp >> 12);
        o[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (uint8_t)(0xF0 | cp >> 18);
    o[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
    o[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

/*
 * Decodes a JSON string value into dst, which must have room for v.len bytes (decoding never
 * makes a string longer). \uXXXX escapes become UTF-8, a surrogate pair becoming one 4-byte
 * sequence. False if v is not a string or holds an unpaired surrogate, which has no UTF-8
 * form. Other bytes are copied as they are (mn_json_parse has checked that they are UTF-8).
 */
static inline bool mn_json_str(mn_span v, uint8_t *dst, uint32_t *out_len) {
    if (v.len < 2 || v.ptr[0] != '"' || v.ptr[v.len - 1] != '"')
        return false;
    const uint8_t *p = v.ptr + 1, *end = v.ptr + v.len - 1;
    uint8_t *o = dst;
    while (p < end) {
        uint8_t c = *p++;
        if (c != '\\') {
            if (c < 0x20)
                return false;
            *o++ = c;
            continue;
        }
        if (p >= end)
            return false;
        switch (c = *p++) {
        case '"': case '\\': case '/': *o++ = c; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            uint32_t cp, lo;
            if (!mn__json_u4(p, end, &cp))
                return false;
            p += 4;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return false; /* a low surrogate with no high one before it */
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || !mn__json_u4(p + 2, end, &lo) ||
                    lo < 0xDC00 || lo > 0xDFFF)
                    return false;
                p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            o += mn__utf8(o, cp);
            break;
        }
        default:
            return false;
        }
    }
    *out_len = (uint32_t)(o - dst);
    return true;
}

/*
 * The usual first steps of a JSON task. Each returns true on success; on failure it has
 * already made its message the failure message, and the task should `return mn_return();`.
 */

/* The whole input must be one JSON object. */
static inline bool mn_input_object(const uint8_t *in, uint32_t len, mn_span *obj) {
    if (mn_json_parse(in, len, obj) && mn_json_is_object(*obj))
        return true;
    mn_fail("input must be a JSON object");
    return false;
}

static inline void mn__error_missing(const char *key) {
    out_error_begin();
    out_str("missing key ");
    out_str(key);
}

/* Member `key` must be an integer in lo..hi. Errors: "missing key K",
   "K must be an integer in LO..HI". */
static inline bool mn_get_u64(mn_span obj, const char *key, uint64_t lo, uint64_t hi, uint64_t *v) {
    mn_span s;
    if (!mn_json_get(obj, key, &s)) {
        mn__error_missing(key);
        return false;
    }
    if (mn_json_u64(s, v) && *v >= lo && *v <= hi)
        return true;
    out_error_begin();
    out_str(key);
    out_str(" must be an integer in ");
    out_u64(lo);
    out_str("..");
    out_u64(hi);
    return false;
}

static inline bool mn_get_i64(mn_span obj, const char *key, int64_t lo, int64_t hi, int64_t *v) {
    mn_span s;
    if (!mn_json_get(obj, key, &s)) {
        mn__error_missing(key);
        return false;
    }
    if (mn_json_i64(s, v) && *v >= lo && *v <= hi)
        return true;
    out_error_begin();
    out_str(key);
    out_str(" must be an integer in ");
    out_i64(lo);
    out_str("..");
    out_i64(hi);
    return false;
}

#endif /* MESHNODE_TASK_H */
