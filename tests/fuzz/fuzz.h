/* fuzz.h — what every fuzz target defines (libFuzzer's entry points). */
#ifndef CORTEX_FUZZ_H
#define CORTEX_FUZZ_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Once, before the first input (argc/argv are libFuzzer's or the replayer's). */
int LLVMFuzzerInitialize(int *argc, char ***argv);
/* An invariant of the parser does not hold for this input: say where, then
 * crash (libFuzzer keeps the input; the replayer has named its file). */
#define FUZZ_FAIL()                                                                                \
	do {                                                                                       \
		fprintf(stderr, "fuzz: invariant broken at %s:%d\n", __FILE__, __LINE__);        \
		abort();                                                                           \
	} while (0)

/* A target without setup of its own writes FUZZ_NO_INIT once. */
#define FUZZ_NO_INIT                                                                               \
	int LLVMFuzzerInitialize(int *argc, char ***argv)                                          \
	{                                                                                          \
		(void)argc;                                                                        \
		(void)argv;                                                                        \
		return 0;                                                                          \
	}
#endif
