/* Unit tests: the sentence splitter (sentence.h) — where sentences end and
 * where they don't, trimming, the length cap, UTF-8 safety, and the same
 * sentences whatever the deltas (one byte at a time, all at once, random). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "sentence.h"
#include "unit_util.h"

/* ---- helpers ---- */

struct got {
	char *s[4096];
	size_t n[4096];
	size_t count;
	int stop_after; /* return 7 after this many sentences; 0 never */
};

static void got_free(struct got *g)
{
	for (size_t i = 0; i < g->count; i++)
		free(g->s[i]);
	g->count = 0;
}

static int utf8_valid(const unsigned char *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		unsigned char c = s[i];
		size_t k = c < 0x80		? 1
			   : (c & 0xe0) == 0xc0 ? 2
			   : (c & 0xf0) == 0xe0 ? 3
			   : (c & 0xf8) == 0xf0 ? 4
						: 0;
		if (!k || i + k > n)
			return 0;
		for (size_t j = 1; j < k; j++)
			if ((s[i + j] & 0xc0) != 0x80)
				return 0;
		i += k;
	}
	return 1;
}

static int is_space(char c)
{
	return c == ' ' || (c >= '\t' && c <= '\r');
}

/* Every sentence is non-empty, trimmed, at most SENTENCE_MAX bytes. */
static int collect(void *arg, const char *s, size_t n)
{
	struct got *g = arg;
	if (n == 0)
		fail_msg("empty sentence");
	if (n > SENTENCE_MAX)
		fail_msg("sentence of %zu bytes", n);
	if (is_space(s[0]) || is_space(s[n - 1]))
		fail_msg("untrimmed sentence \"%.*s\"", (int)n, s);
	if (g->count == sizeof g->s / sizeof *g->s)
		fail_msg("too many sentences");
	g->s[g->count] = malloc(n + 1);
	assert_non_null(g->s[g->count]);
	memcpy(g->s[g->count], s, n);
	g->s[g->count][n] = 0;
	g->n[g->count++] = n;
	return g->stop_after && g->count == (size_t)g->stop_after ? 7 : 0;
}

static void feed(struct sentencer *z, struct got *g, const char *t, size_t n)
{
	cx_err err = CX_ERR_INIT;
	int r = sentencer_feed(z, t, n, collect, g, &err);
	if (r != 0)
		fail_msg("sentencer_feed: %d %s", r, err.msg);
}

static uint64_t rng = 0x243f6a8885a308d3u;
static uint32_t rnd(void)
{
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return (uint32_t)((rng * 0x2545f4914f6cdd1du) >> 32);
}

/* Split t into deltas: step 0 = at once, 1 = byte at a time, else random
 * sizes 1..step; then flush. */
static void run(struct got *g, const char *t, size_t n, size_t step)
{
	struct sentencer z;
	sentencer_init(&z);
	for (size_t off = 0; off < n;) {
		size_t d = step == 0 ? n : step == 1 ? 1 : 1 + rnd() % step;
		if (d > n - off)
			d = n - off;
		feed(&z, g, t + off, d);
		off += d;
	}
	assert_int_equal(sentencer_flush(&z, collect, g), 0);
	assert_int_eq_msg(z.len, 0, "buffer after flush");
	sentencer_free(&z);
}

static void dump(const char *label, const struct got *g)
{
	print_message("%s (%zu):\n", label, g->count);
	for (size_t i = 0; i < g->count; i++)
		print_message("  [%s]\n", g->s[i]);
}

/* The same sentences at once, byte at a time and in random deltas. */
static void check_same(const char *t, size_t n, struct got *ref)
{
	static const size_t steps[] = {1, 2, 3, 7, 40, 500};
	run(ref, t, n, 0);
	for (size_t k = 0; k < sizeof steps / sizeof *steps; k++) {
		struct got g = {.count = 0};
		run(&g, t, n, steps[k]);
		int same = g.count == ref->count;
		for (size_t i = 0; same && i < g.count; i++)
			same = g.n[i] == ref->n[i] && memcmp(g.s[i], ref->s[i], g.n[i]) == 0;
		if (!same) {
			dump("at once", ref);
			dump("in deltas", &g);
			fail_msg("deltas of up to %zu bytes differ on \"%.60s\"", steps[k], t);
		}
		got_free(&g);
	}
}

/* t splits into exactly the NULL-terminated list, however it is fed. */
static void expect(const char *t, const char *const *want)
{
	struct got g = {.count = 0};
	check_same(t, strlen(t), &g);
	size_t n = 0;
	while (want[n])
		n++;
	int ok = g.count == n;
	for (size_t i = 0; ok && i < n; i++)
		ok = strcmp(g.s[i], want[i]) == 0;
	if (!ok) {
		dump("got", &g);
		fail_msg("\"%s\": expected %zu sentences, first \"%s\"", t, n, n ? want[0] : "");
	}
	got_free(&g);
}

#define EXPECT(text, ...) expect(text, (const char *const[]){__VA_ARGS__, NULL})

/* ---- tests ---- */

static void test_basic(void **state)
{
	(void)state;
	EXPECT("Hello world. How are you? I'm fine!", "Hello world.", "How are you?", "I'm fine!");
	EXPECT("Really?! Yes!!! Ok.", "Really?!", "Yes!!!", "Ok.");
	EXPECT("No terminator at all", "No terminator at all");
	EXPECT("Line one\nline two. Next", "Line one\nline two.", "Next");
}

/* A sentence comes out the moment it is complete, before the message ends. */
static void test_emits_early(void **state)
{
	(void)state;
	struct sentencer z;
	struct got g = {.count = 0};
	sentencer_init(&z);
	feed(&z, &g, "Hello world.", 12);
	assert_int_eq_msg(g.count, 0, "no space after the dot yet");
	feed(&z, &g, " How", 4);
	assert_int_eq_msg(g.count, 1, "after the space");
	assert_string_equal(g.s[0], "Hello world.");
	feed(&z, &g, " are you? ", 10);
	assert_int_eq_msg(g.count, 2, "a question, then a space");
	feed(&z, &g, "Fine", 4);
	assert_int_eq_msg(g.count, 2, "before flush");
	assert_int_equal(sentencer_flush(&z, collect, &g), 0);
	assert_int_eq_msg(g.count, 3, "after flush");
	assert_string_equal(g.s[2], "Fine");
	/* CJK: no space needed, only the next character (not a closer). */
	feed(&z, &g, "\xe4\xbd\xa0\xe5\xa5\xbd\xe3\x80\x82", 9); /* 你好。 */
	assert_int_eq_msg(g.count, 3, "a closer may still follow");
	feed(&z, &g, "\xe6", 1);
	assert_int_eq_msg(g.count, 4, "CJK sentence");
	assert_string_equal(g.s[3], "\xe4\xbd\xa0\xe5\xa5\xbd\xe3\x80\x82");
	feed(&z, &g, "\x88\x91", 2); /* 我 */
	assert_int_equal(sentencer_flush(&z, collect, &g), 0);
	assert_int_eq_msg(g.count, 5, "the rest at flush");
	assert_string_equal(g.s[4], "\xe6\x88\x91");
	sentencer_free(&z);
	got_free(&g);
}

static void test_no_split(void **state)
{
	(void)state;
	EXPECT("Pi is 3.14 today. Yes.", "Pi is 3.14 today.", "Yes.");
	EXPECT("Use a tool, e.g. this one. Ok.", "Use a tool, e.g. this one.", "Ok.");
	EXPECT("That is, i.e. the rest, fine.", "That is, i.e. the rest, fine.");
	EXPECT("Mr. Smith met Dr. Jones. Then.", "Mr. Smith met Dr. Jones.", "Then.");
	EXPECT("Ask Mrs. Brown vs. Prof. Green.", "Ask Mrs. Brown vs. Prof. Green.");
	EXPECT("Call Dr.", "Call Dr.");
	EXPECT("Apples, pears, etc. and more.", "Apples, pears, etc. and more.");
	EXPECT("Wait... what happened? Ok.", "Wait... what happened?", "Ok.");
	EXPECT("Hmm\xe2\x80\xa6 maybe not.", "Hmm\xe2\x80\xa6 maybe not.");
	EXPECT("J. R. R. Tolkien wrote it.", "J. R. R. Tolkien wrote it.");
	EXPECT("Visit example.com today. Bye.", "Visit example.com today.", "Bye.");
	EXPECT("At 3 p.m. today we meet.", "At 3 p.m. today we meet.");
	EXPECT("Steps:\n1. Open it\n2. Close it", "Steps:\n1. Open it\n2. Close it");
	EXPECT("Version 1.2.3 is out. Get it.", "Version 1.2.3 is out.", "Get it.");
}

static void test_splits(void **state)
{
	(void)state;
	EXPECT("Apples, pears, etc. Then we left.", "Apples, pears, etc.", "Then we left.");
	EXPECT("Wait... What? Ok.", "Wait...", "What?", "Ok.");
	EXPECT("Hmm\xe2\x80\xa6 Okay.", "Hmm\xe2\x80\xa6", "Okay.");
	EXPECT("We meet at 5 p.m. Be there.", "We meet at 5 p.m.", "Be there.");
	EXPECT("It was 2023. A good year.", "It was 2023.", "A good year.");
	EXPECT("See item 12. It works.", "See item 12.", "It works.");
	EXPECT("The end etc.\n\nNext part", "The end etc.", "Next part");
	EXPECT("I said no. Then left.", "I said no.", "Then left.");
}

static void test_closers(void **state)
{
	(void)state;
	EXPECT("He said \"Stop.\" Then he left.", "He said \"Stop.\"", "Then he left.");
	EXPECT("(Really?) Yes.", "(Really?)", "Yes.");
	EXPECT("\xe2\x80\x9cQuoted.\xe2\x80\x9d Next.", "\xe2\x80\x9cQuoted.\xe2\x80\x9d", "Next.");
	EXPECT("It's 'done.' Next.", "It's 'done.'", "Next.");
	EXPECT("**Note.** Read this.", "**Note.**", "Read this.");
	EXPECT("[See above.]) Then.", "[See above.])", "Then.");
}

static void test_cjk(void **state)
{
	(void)state;
	/* 你好。今天好吗？我很好！ */
	EXPECT(
	    "\xe4\xbd\xa0\xe5\xa5\xbd\xe3\x80\x82\xe4\xbb\x8a\xe5\xa4\xa9\xe5\xa5\xbd\xe5\x90\x97"
	    "\xef\xbc\x9f\xe6\x88\x91\xe5\xbe\x88\xe5\xa5\xbd\xef\xbc\x81",
	    "\xe4\xbd\xa0\xe5\xa5\xbd\xe3\x80\x82",
	    "\xe4\xbb\x8a\xe5\xa4\xa9\xe5\xa5\xbd\xe5\x90\x97\xef\xbc\x9f",
	    "\xe6\x88\x91\xe5\xbe\x88\xe5\xa5\xbd\xef\xbc\x81");
	/* 「好。」他说。 — the closing bracket stays with its sentence. */
	EXPECT(
	    "\xe3\x80\x8c\xe5\xa5\xbd\xe3\x80\x82\xe3\x80\x8d\xe4\xbb\x96\xe8\xaf\xb4\xe3\x80\x82",
	    "\xe3\x80\x8c\xe5\xa5\xbd\xe3\x80\x82\xe3\x80\x8d",
	    "\xe4\xbb\x96\xe8\xaf\xb4\xe3\x80\x82");
	/* Mixed with English, and an ideographic space trimmed. */
	EXPECT("OK\xe3\x80\x82\xe3\x80\x80Then more. End", "OK\xe3\x80\x82", "Then more.", "End");
}

static void test_blank_line(void **state)
{
	(void)state;
	EXPECT("Title\n\nBody without a period\n \t\nLast", "Title", "Body without a period",
	       "Last");
	EXPECT("# Heading\r\n\r\nText.", "# Heading", "Text.");
	EXPECT("one\ntwo\nthree", "one\ntwo\nthree");
}

static void test_trim_never_empty(void **state)
{
	(void)state;
	EXPECT("   Hello.   \n\n\n  World.  ", "Hello.", "World.");
	EXPECT("\n\n \n\t", NULL);
	EXPECT("", NULL);
	EXPECT("\xe3\x80\x80 \xe3\x80\x80", NULL);
}

static void test_flush(void **state)
{
	(void)state;
	struct sentencer z;
	struct got g = {.count = 0};
	sentencer_init(&z);
	assert_int_equal(sentencer_flush(&z, collect, &g), 0); /* nothing, nothing out */
	feed(&z, &g, "One. Two", 8);
	assert_int_equal(sentencer_flush(&z, collect, &g), 0);
	assert_int_equal(sentencer_flush(&z, collect, &g), 0); /* twice: no repeat */
	assert_int_eq_msg(g.count, 2, "sentences");
	assert_string_equal(g.s[1], "Two");
	feed(&z, &g, "  \n\n ", 5); /* blank rest: nothing */
	assert_int_equal(sentencer_flush(&z, collect, &g), 0);
	assert_int_eq_msg(g.count, 2, "after a blank flush");
	feed(&z, &g, "Again works.", 12); /* usable after flush */
	assert_int_equal(sentencer_flush(&z, collect, &g), 0);
	assert_int_eq_msg(g.count, 3, "after reuse");
	assert_string_equal(g.s[2], "Again works.");
	sentencer_free(&z);
	sentencer_free(&z); /* twice is fine */
	got_free(&g);
}

/* A non-zero return from the callback stops the feed and is passed through;
 * the rest stays buffered for the next call. */
static void test_stop(void **state)
{
	(void)state;
	struct sentencer z;
	struct got g = {.count = 0, .stop_after = 1};
	cx_err err = CX_ERR_INIT;
	sentencer_init(&z);
	const char *t = "A one. B two. C three. D";
	assert_int_equal(sentencer_feed(&z, t, strlen(t), collect, &g, &err), 7);
	assert_int_eq_msg(g.count, 1, "stopped after one");
	g.stop_after = 0;
	assert_int_equal(sentencer_feed(&z, "", 0, collect, &g, &err), 0);
	assert_int_eq_msg(g.count, 3, "the rest after an empty feed");
	assert_string_equal(g.s[1], "B two.");
	assert_int_equal(sentencer_flush(&z, collect, &g), 0);
	assert_string_equal(g.s[3], "D");
	sentencer_free(&z);
	got_free(&g);
}

/* Over-long "sentences": cut at the last whitespace before the cap, or at a
 * character boundary; nothing is lost but whitespace. */
static void test_cap(void **state)
{
	(void)state;
	/* Words with no terminator: cut at a space, the first before the end. */
	char *t = malloc(6001);
	assert_non_null(t);
	size_t n = 0, nwords = 0;
	while (n + 6 <= 6000) {
		const char *w = nwords % 7 ? "word" : "w\xc3\xb6rd";
		memcpy(t + n, w, strlen(w));
		n += strlen(w);
		t[n++] = nwords++ % 13 ? ' ' : '\n';
	}
	t[n] = 0;
	struct got g = {.count = 0};
	struct sentencer z;
	sentencer_init(&z);
	feed(&z, &g, t, n);
	assert_true(g.count >= 2); /* before flush */
	assert_true(g.n[0] > SENTENCE_MAX - 8 && g.n[0] <= SENTENCE_MAX);
	assert_int_equal(sentencer_flush(&z, collect, &g), 0);
	sentencer_free(&z);
	size_t words = 0;
	for (size_t i = 0; i < g.count; i++) {
		assert_true(utf8_valid((const unsigned char *)g.s[i], g.n[i]));
		for (char *p = g.s[i]; *p; p++)
			words += *p == 'd';
		assert_true(g.s[i][g.n[i] - 1] == 'd'); /* cut between words */
	}
	assert_int_eq_msg(words, nwords, "words kept");
	got_free(&g);
	struct got ref = {.count = 0};
	check_same(t, n, &ref);
	got_free(&ref);

	/* No whitespace: 2-byte and 4-byte characters, misaligned by one byte. */
	static const char *chars[] = {"\xc3\xa9", "\xf0\x9f\x98\x80", "\xe4\xbd\xa0"};
	for (size_t c = 0; c < 3; c++) {
		size_t cl = strlen(chars[c]);
		n = 1;
		t[0] = 'x';
		while (n + cl <= 6000) {
			memcpy(t + n, chars[c], cl);
			n += cl;
		}
		t[n] = 0;
		struct got h = {.count = 0};
		check_same(t, n, &h);
		size_t total = 0;
		for (size_t i = 0; i < h.count; i++) {
			if (!utf8_valid((const unsigned char *)h.s[i], h.n[i]))
				fail_msg("char %zu: sentence %zu cut inside a character", c, i);
			assert_true(h.n[i] + cl > SENTENCE_MAX || i == h.count - 1);
			total += h.n[i];
		}
		assert_int_eq_msg(total, n, "bytes kept");
		got_free(&h);
	}
	free(t);
}

/* Random text from UTF-8 pieces, terminators, closers and spaces: same
 * sentences in any deltas, all valid UTF-8. */
static void test_random_utf8(void **state)
{
	(void)state;
	static const char *const parts[] = {"word",
					    "Big",
					    "a",
					    "3.14",
					    " ",
					    " ",
					    " ",
					    "\n",
					    "\n\n",
					    ".",
					    ".",
					    "!",
					    "?",
					    "...",
					    "\xe2\x80\xa6",
					    "\"",
					    ")",
					    "\xe2\x80\x9d",
					    "\xc3\xa9t\xc3\xa9",
					    "\xe4\xbd\xa0\xe5\xa5\xbd",
					    "\xe3\x80\x82",
					    "\xef\xbc\x9f",
					    "\xe3\x80\x8d",
					    "\xf0\x9f\x98\x80",
					    "Mr.",
					    "e.g.",
					    "etc.",
					    "\xe3\x80\x80",
					    "1.",
					    "\xc3\xa9"};
	char *t = malloc(20000);
	assert_non_null(t);
	for (int round = 0; round < 30; round++) {
		size_t n = 0, want = round < 25 ? 300 + rnd() % 1500 : 19000;
		while (n < want) {
			const char *p = parts[rnd() % (sizeof parts / sizeof *parts)];
			size_t pl = strlen(p);
			if (round >= 25 && p[0] == ' ' && rnd() % 8)
				p = "x", pl = 1; /* few spaces: the cap is hit */
			memcpy(t + n, p, pl);
			n += pl;
		}
		struct got g = {.count = 0};
		check_same(t, n, &g);
		for (size_t i = 0; i < g.count; i++)
			if (!utf8_valid((const unsigned char *)g.s[i], g.n[i]))
				fail_msg("round %d: invalid UTF-8 in \"%s\"", round, g.s[i]);
		got_free(&g);
	}
	free(t);
}

/* Realistic agent text, checked for delta-independence. */
static void test_equivalence(void **state)
{
	(void)state;
	static const char *const texts[] = {
	    "Sure! Here's the plan:\n\n1. Read the file.\n2. Fix the bug (see line 42).\n3. "
	    "Run the tests, e.g. `make test`.\n\nDone... mostly. Mr. Smith, Ph.D., agrees? "
	    "I think so!\n",
	    "The value is 3.14159. It's \"approximately\" pi. Hmm\xe2\x80\xa6 Wait. Ok!? Fine.",
	    "\xe4\xbb\x8a\xe5\xa4\xa9\xe5\xa4\xa9\xe6\xb0\x94\xe5\xbe\x88\xe5\xa5\xbd\xe3\x80\x82"
	    "\xe6\x88\x91\xe4\xbb\xac\xe5\x8e\xbb\xe5\x85\xac\xe5\x9b\xad\xe5\x90\x97\xef\xbc\x9f"
	    "\xe5\xa5\xbd\xef\xbc\x81 Then English. Caf\xc3\xa9s, etc. \xc3\xa9t\xc3\xa9 is nice.",
	    "```c\nint x = 1;\n```\n\nThat code sets x. Next, run it... then check.",
	    "A.  B.\t\tC.\r\n\r\nD?\"  E!)  F\xe2\x80\xa6\xe2\x80\x9d G",
	};
	for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
		struct got g = {.count = 0};
		check_same(texts[i], strlen(texts[i]), &g);
		assert_true(g.count >= 3);
		got_free(&g);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_basic),	cmocka_unit_test(test_emits_early),
	    cmocka_unit_test(test_no_split),	cmocka_unit_test(test_splits),
	    cmocka_unit_test(test_closers),	cmocka_unit_test(test_cjk),
	    cmocka_unit_test(test_blank_line),	cmocka_unit_test(test_trim_never_empty),
	    cmocka_unit_test(test_flush),	cmocka_unit_test(test_stop),
	    cmocka_unit_test(test_cap),		cmocka_unit_test(test_random_utf8),
	    cmocka_unit_test(test_equivalence),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
