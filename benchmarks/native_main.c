/*
 * Builds a task's unchanged C source as a native program, for comparing wasm with native code.
 *
 *   gcc -O2 -ffp-contract=off -DTASK_SOURCE='"../tasks_wasm/mandelbrot.c"' -I../tasks_wasm/include \
 *       benchmarks/native_main.c -o mandelbrot_native
 *   ./mandelbrot_native '{"x0":0,...}' REPEATS OUT_FILE
 *
 * The task's linear memory becomes a 256 MiB arena mapped below 2 GiB, so that the ABI's
 * 32-bit pointers (packed into run's i64 result) still hold. Prints the fastest run in seconds.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define ARENA (256ull << 20)
static unsigned char *native_heap;
#define __heap_base (*native_heap)
#define __builtin_wasm_memory_size(i) ((size_t)((((uintptr_t)native_heap) + ARENA) >> 16))
#define __builtin_wasm_memory_grow(i, n) ((size_t)-1)
#define export_name(x) unused

#include TASK_SOURCE

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s INPUT REPEATS OUT_FILE\n", argv[0]);
        return 2;
    }
    native_heap = mmap(NULL, ARENA, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT | MAP_NORESERVE, -1, 0);
    if (native_heap == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    uint32_t len = (uint32_t)strlen(argv[1]);
    double best = 1e9;
    int64_t packed = 0;
    for (int i = 0; i < atoi(argv[2]); i++) {
        mn__heap_top = 0; /* a fresh "instance": reset the bump allocator */
        memset(&mn__out, 0, sizeof mn__out);
        mn__failing = false;
        uint8_t *in = alloc(len);
        memcpy(in, argv[1], len);
        double t0 = now();
        packed = run(in, len);
        double t = now() - t0;
        if (t < best)
            best = t;
    }
    uint64_t r = (uint64_t)packed;
    if (r & MN_FAILED) { /* the task failed the subtask: say why, as the host would */
        fprintf(stderr, "task_error: %.*s\n", (int)(r & 0x7FFFFFFFu), (const char *)(uintptr_t)(r >> 32));
        return 1;
    }
    FILE *f = fopen(argv[3], "wb");
    fwrite((void *)(uintptr_t)(r >> 32), 1, (size_t)(r & 0xFFFFFFFFu), f);
    fclose(f);
    printf("%.6f\n", best);
    return 0;
}
