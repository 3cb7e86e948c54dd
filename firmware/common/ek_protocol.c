/* ek_protocol.c: the MLPerf Tiny / EEMBC text protocol and edgekit's ek-* extensions (firmware/README.md).
   Every argument is checked; a bad command gets one e-[...] line and the loop keeps serving. No printf:
   newlib-nano prints neither floats nor 64-bit integers, and a fuzzer is happier without it. */
#include <string.h>
#include "ek_crc32.h"
#include "ek_io.h"
#include "ek_model_config.h"
#include "ek_port.h"
#include "ek_protocol.h"

#define CMD_MAX 80 /* the EEMBC limit on a command */
#define MAX_ARGS 6
#ifndef EK_MAX_ITERS
#define EK_MAX_ITERS 100000000u /* bounds infer/ek-time so a typo cannot wedge the board for days */
#endif
#ifndef EK_LOAD_TIMEOUT_MS
#define EK_LOAD_TIMEOUT_MS 500 /* silence that ends a binary load, so a dropped byte cannot wedge it */
#endif

/* The input buffer. By default a buffer of the core's own, which the model only reads: any loaded input then
   serves any number of runs. Built with EK_INPUT_IN_ARENA (edgekit.firmware does so when the model plus that
   buffer overflow the board's RAM), the input lives in the model's arena slot instead, which the run reuses
   once the last layer reading the input is done. Repeated runs (infer N W, ek-time N) then need the input
   back: before the first run the core keeps a compact, exact copy of it (a palette of its distinct 32-bit
   words, at most 256, and one index byte per word: a quarter of its size; any input made from 8-bit pixels
   qualifies) and restores the slot from it before each further run. An input with more distinct words
   serves one run; more are refused with an e-[...] line rather than computed on garbage. */
#if EK_INPUT_IN_ARENA
#define IN ((uint8_t *)EK_MODEL_INPUT_BUFFER())
#define IN_WORDS (EK_MODEL_INPUT_BYTES / 4)
static uint32_t pal[256], pal_n;                       /* sorted distinct words of the input */
static uint8_t pal_idx[IN_WORDS ? IN_WORDS : 1], pal_tail[4]; /* per word; the bytes past the last word */
static int slot_ok, copy_ok; /* the slot holds the loaded input; the compact copy does */
#else
static uint32_t in_buf[(EK_MODEL_INPUT_BYTES + 3) / 4]; /* word aligned */
#define IN ((uint8_t *)in_buf)
#endif
static uint32_t out_buf[(EK_MODEL_OUTPUT_BYTES + 3) / 4];
#define OUT ((uint8_t *)out_buf)
/* The db buffer: the model's input itself, or in an --mlperf build the runner's raw input (its own format and
   size), converted into the model's input once the load is complete (ek_io.c) */
#ifdef EK_MLPERF_RAW_BYTES
static uint32_t raw_buf[(EK_MLPERF_RAW_BYTES + 3) / 4];
#define DB ((uint8_t *)raw_buf)
#define DB_BYTES EK_MLPERF_RAW_BYTES
#define DB_IS_INPUT 0
#define PROFILE_MODEL EK_MLPERF_MODEL
#else
#define DB IN
#define DB_BYTES EK_MODEL_INPUT_BYTES
#define DB_IS_INPUT 1
#define PROFILE_MODEL EK_MODEL_NAME
#endif
static uint32_t db_want, db_have; /* db load: bytes announced / received so far; db_want != 0: incomplete */
static int have_results;
static uint32_t run_crc, res_crc; /* CRC-32 of the input the coming runs see / the results came from */
static int framed;                /* inside an ek-* reply: its bytes go into reply_crc, sent in m-ek-end- */
static uint32_t reply_crc;
static uint64_t stamps[EK_MODEL_NUM_LAYERS + 1];
static char obuf[96];
static size_t olen;

/* ---- output: whole lines go to the port at once ---- */
static void out(const void *p, size_t n) {
  if (framed) reply_crc = ek_crc32(reply_crc, p, n);
  ek_port_write(p, n);
}
static void flush(void) { out(obuf, olen); olen = 0; }
static void put(const char *s) {
  while (*s) { if (olen == sizeof obuf) flush(); obuf[olen++] = *s++; }
}
static void endl(void) { put("\r\n"); flush(); }
static void put_u64(uint64_t v) {
  char b[21], *p = b + 20;
  *p = 0;
  do *--p = (char)('0' + v % 10); while (v /= 10);
  put(p);
}
static void put_hex(uint32_t v, int digits) {
  char b[9];
  for (int i = digits - 1; i >= 0; i--, v >>= 4) b[i] = "0123456789abcdef"[v & 15];
  b[digits] = 0;
  put(b);
}
static void put_float(float f) { /* 7 significant digits, d.dddddde+-XX: plenty for a text check */
  if (f != f) { put("nan"); return; }
  if (f < 0) { put("-"); f = -f; }
  if (f > 3.4028235e38f) { put("inf"); return; }
  if (f == 0) { put("0"); return; }
  int e = 0;
  while (f >= 10.f) { f /= 10.f; e++; }
  while (f < 1.f) { f *= 10.f; e--; }
  uint32_t m = (uint32_t)(f * 1e6f + 0.5f);
  if (m >= 10000000u) { m /= 10; e++; }
  put_u64(m / 1000000u); put(".");
  char d[7];
  for (int i = 5; i >= 0; i--, m /= 10) d[i] = (char)('0' + m % 10);
  d[6] = 0;
  put(d); put(e < 0 ? "e-" : "e+");
  if (e < 0) e = -e;
  if (e < 10) put("0");
  put_u64((uint64_t)e);
}
static void put_fixed3(float f) { /* printf's %0.3f: correctly rounded, ties to even, from the exact value */
  if (f != f) { put("nan"); return; }
  if (f < 0) { put("-"); f = -f; }
  if (f > 1e15f) { put_u64((uint64_t)f); put(".000"); return; }
  double m = (double)f * 1000.0; /* exact: 24 + 10 bits */
  uint64_t n = (uint64_t)m;
  double frac = m - (double)n;
  if (frac > 0.5 || (frac == 0.5 && (n & 1))) n++;
  put_u64(n / 1000); put(".");
  put_u64(n / 100 % 10); put_u64(n / 10 % 10); put_u64(n % 10);
}
static void line(const char *a, const char *b) { put(a); put(b); endl(); }
static void err(const char *msg) { line("e-[", msg); } /* msg carries the closing bracket */

/* ---- parsing ---- */
static int parse_u32(const char *s, uint32_t *v) { /* decimal, no sign, no overflow */
  uint64_t x = 0;
  if (!*s) return 0;
  for (; *s; s++) if (*s < '0' || *s > '9' || (x = x * 10 + (uint64_t)(*s - '0')) > 0xFFFFFFFFu) return 0;
  *v = (uint32_t)x;
  return 1;
}
static int hexval(char c) {
  return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}
static int parse_hex32(const char *s, uint32_t *v) {
  size_t n = strlen(s);
  if (n == 0 || n > 8) return 0;
  for (*v = 0; *s; s++) { int h = hexval(*s); if (h < 0) return 0; *v = *v << 4 | (uint32_t)h; }
  return 1;
}

/* ---- the input ---- */
#if EK_INPUT_IN_ARENA
static uint32_t pal_find(uint32_t v) { /* first palette index whose word is >= v */
  uint32_t lo = 0, hi = pal_n;
  while (lo < hi) { uint32_t mid = (lo + hi) / 2; if (pal[mid] < v) lo = mid + 1; else hi = mid; }
  return lo;
}
static int save_input(void) { /* the compact copy of the slot; 0 if the input has over 256 distinct words */
  uint32_t v, k;
  pal_n = 0;
  for (uint32_t i = 0; i < IN_WORDS; i++) { /* pass 1: the sorted set of words */
    memcpy(&v, IN + 4 * i, 4);
    if ((k = pal_find(v)) < pal_n && pal[k] == v) continue;
    if (pal_n == 256) return 0;
    memmove(pal + k + 1, pal + k, (pal_n - k) * sizeof *pal);
    pal[k] = v; pal_n++;
  }
  for (uint32_t i = 0; i < IN_WORDS; i++) { memcpy(&v, IN + 4 * i, 4); pal_idx[i] = (uint8_t)pal_find(v); }
  memcpy(pal_tail, IN + 4 * IN_WORDS, EK_MODEL_INPUT_BYTES % 4);
  return 1;
}
static void restore_input(void) {
  for (uint32_t i = 0; i < IN_WORDS; i++) memcpy(IN + 4 * i, &pal[pal_idx[i]], 4);
  memcpy(IN + 4 * IN_WORDS, pal_tail, EK_MODEL_INPUT_BYTES % 4);
  slot_ok = 1;
}
static void consumed(void) { err("input consumed by the last inference (it lives in the model's arena): load it again]"); }
/* before the host reads (write = 0) or writes input bytes: the slot must hold the loaded input. If the last
   run consumed an input that had no copy, a read is refused and a write starts from zeros, as after boot. */
static int input_access(int write) {
  if (!slot_ok) {
    if (copy_ok) restore_input();
    else if (!write) { consumed(); return -1; }
    else { memset(IN, 0, EK_MODEL_INPUT_BYTES); slot_ok = 1; }
  }
  if (write) copy_ok = 0;
  return 0;
}
/* before `runs` inferences on the loaded input; nonzero (after an e- line) if they cannot all see it */
static int input_prepare(uint32_t runs) {
  if (!slot_ok && !copy_ok) { consumed(); return -1; }
  if (!copy_ok) copy_ok = save_input();
  if (!copy_ok && runs > 1) {
    err("input has over 256 distinct float values and lives in the model's arena: one inference per load]");
    return -1;
  }
  return 0;
}
static void input_ready(void) { if (!slot_ok) restore_input(); } /* the slot holds the input */
static int input_gone(void) { return !slot_ok && !copy_ok; }   /* consumed, and no copy to restore */
static void input_consumed(void) { slot_ok = 0; }                 /* the run reused the slot */
#else
static int input_access(int write) { (void)write; return 0; }
static int input_prepare(uint32_t runs) { (void)runs; return 0; }
static void input_ready(void) {}
static void input_consumed(void) {}
static int input_gone(void) { return 0; }
#endif

/* ---- the model ---- */
static int run_model(void) { /* one inference; the caller has called input_prepare, and input_ready */
  int rc = EK_MODEL_RUN(IN, out_buf);
  input_consumed();
  have_results = rc == 0;
  res_crc = run_crc;
  if (rc) err("Model run failed]");
  return rc;
}
static int run_n(uint32_t n) { while (n--) { input_ready(); if (run_model()) return -1; } return 0; }
static void lap(void) { put("m-lap-us-"); put_u64(ek_port_counter() / ek_port_counter_per_us); endl(); }
static void results(void) { /* the dequantized scores (ek_io.c), as th_results prints them */
  put("m-results-[");
  for (uint32_t i = 0; i < ek_io_score_count(); i++) {
    if (i) put(",");
#ifdef EK_MLPERF_RAW_BYTES
    put_fixed3(ek_io_score(OUT, DB, i));
#else
    put_float(ek_io_score(OUT, 0, i));
#endif
  }
  put("]"); endl();
}
/* nonzero (after an e- line) while a db load is incomplete: a partial input never runs */
static int load_incomplete(void) {
  if (!db_want) return 0;
  put("e-[db load incomplete: "); put_u64(db_have); put(" of "); put_u64(db_want);
  put(" bytes, send the rest or db load again]"); endl();
  return 1;
}
static void hook(int layer) {
  if (layer >= 0 && layer < EK_MODEL_NUM_LAYERS) stamps[layer + 1] = ek_port_counter();
}

/* ---- standard commands ---- */
static void cmd_db(int argc, char **argv) {
  uint32_t n, off = 0;
  if (argc == 3 && !strcmp(argv[1], "load")) {
    if (!parse_u32(argv[2], &n) || n != DB_BYTES) { /* the whole input, nothing else: no partial input runs */
      put("e-[db load: N must be "); put_u64(DB_BYTES); put(", the input's size in bytes]"); endl(); return;
    }
    db_want = n; db_have = 0;
    if (DB_IS_INPUT) input_access(1);
    put("m-[Expecting "); put_u64(n); put(" bytes]"); endl();
  } else if (argc >= 2 && argc <= 4 && !strcmp(argv[1], "print")) {
    n = 16;
    if ((argc > 2 && !parse_u32(argv[2], &n)) || (argc > 3 && !parse_u32(argv[3], &off)) ||
        n > DB_BYTES || off > DB_BYTES - n) { err("db print: N offset out of range]"); return; }
    if (DB_IS_INPUT && input_access(0)) return;
    for (uint32_t i = 0; i < n; i++) {
      if (i % 8 == 0) put("m-buffer");
      put("-"); put_hex(DB[off + i], 2);
      if (i % 8 == 7 || i == n - 1) endl();
    }
  } else if (argc == 2 && strcmp(argv[1], "load")) {
    size_t len = strlen(argv[1]);
    if (!db_want) { err("db: no load in progress, send db load N first]"); return; }
    if (len % 2) { err("db: odd number of hex digits]"); return; }
    for (size_t i = 0; i < len; i++) if (hexval(argv[1][i]) < 0) { err("db: not a hex digit]"); return; }
    if (len / 2 > db_want - db_have) { err("db: more bytes than db load announced]"); return; }
    if (DB_IS_INPUT) input_access(1); /* an inference may have run since db load */
    for (size_t i = 0; i < len; i += 2) DB[db_have++] = (uint8_t)(hexval(argv[1][i]) << 4 | hexval(argv[1][i + 1]));
    if (db_have == db_want) {
      db_want = 0;
#ifdef EK_MLPERF_RAW_BYTES
      input_access(1);
      ek_io_convert(DB, IN); /* th_load_tensor: the runner's format into the model's input */
#endif
      line("m-load-done", "");
    }
  } else err("db: use db load N, db HEX or db print [N] [offset]]");
}

static void cmd_infer(int argc, char **argv) {
  uint32_t n = 0, w = 10;
  if (argc < 2 || argc > 3 || !parse_u32(argv[1], &n) || n == 0) { err("Inference iterations must be >0]"); return; }
  if (argc == 3 && !parse_u32(argv[2], &w)) { err("infer: warmup W must be a number >= 0]"); return; }
  if (n > EK_MAX_ITERS || w > EK_MAX_ITERS) { err("infer: too many iterations]"); return; }
  if (load_incomplete() || input_prepare(n + w)) return;
  input_ready();
  run_crc = ek_crc32(0, IN, EK_MODEL_INPUT_BYTES);
  put("m-warmup-start-"); put_u64(w); endl();
  if (run_n(w)) return;
  line("m-warmup-done", "");
  put("m-infer-start-"); put_u64(n); endl();
  lap();
  if (run_n(n)) return;
  lap();
  line("m-infer-done", "");
  results();
}

/* ---- edgekit extensions ----
   Each ek-* command ends with the CRC-32 of its text before that word, and each reply ends with
   m-ek-end-CRC over every byte of it: a damaged command or reply is never taken for a good one.
   e-[damaged ...] refusals mean "it arrived damaged: send it again" (firmware/README.md). */
static void cmd_info(int argc, char **argv) {
  (void)argc; (void)argv;
  put("m-ek-info-name="); put(EK_MODEL_NAME);
  put(" hash="); put(EK_MODEL_HASH);
  put(" board="); put(EK_BOARD_NAME);
  put(" input="); put_u64(EK_MODEL_INPUT_BYTES);
  put(" output="); put_u64(EK_MODEL_OUTPUT_BYTES);
  put(" arena="); put_u64(EK_MODEL_ARENA_BYTES);
  put(" layers="); put_u64(EK_MODEL_NUM_LAYERS);
  put(" counter="); put(ek_port_counter_name);
  put(" per_us="); put_u64(ek_port_counter_per_us);
  put(" timer="); put(ek_port_timer);
  put(" threads="); put_u64(ek_port_threads());
  endl();
}

/* single-threaded unless the port says otherwise (the Linux port: its --threads pool) */
__attribute__((weak)) uint32_t ek_port_threads(void) { return 1; }

static void cmd_load(int argc, char **argv) { /* ek-load N CRC [OFFSET]: N raw bytes follow m-ek-load-ready */
  uint32_t n, crc, off = 0, got = 0;
  if (argc < 3 || argc > 4 || !parse_u32(argv[1], &n) || !parse_hex32(argv[2], &crc) ||
      (argc == 4 && !parse_u32(argv[3], &off)) || n == 0 || n > EK_MODEL_INPUT_BYTES || off > EK_MODEL_INPUT_BYTES - n) {
    put("e-[ek-load: use ek-load N CRC32HEX [OFFSET] with 0 < N, N+OFFSET <= "); put_u64(EK_MODEL_INPUT_BYTES);
    put("]"); endl(); return;
  }
  input_access(1);
  db_want = 0; /* the host loads the input itself: an unfinished db load is abandoned */
  put("m-ek-load-ready-"); put_u64(n); endl();
  for (; got < n; got++) {
    int c = ek_port_getc(EK_LOAD_TIMEOUT_MS);
    if (c < 0) break;
    IN[off + got] = (uint8_t)c;
  }
  if (got < n) {
    put("e-[damaged ek-load: timeout after "); put_u64(got); put(" of "); put_u64(n); put(" bytes]"); endl(); return;
  }
  uint32_t have = ek_crc32(0, IN + off, n);
  if (have != crc) {
    put("e-[damaged ek-load: crc mismatch, got "); put_hex(have, 8); put(" expected "); put_hex(crc, 8); put("]"); endl();
    return;
  }
  put("m-ek-load-done-"); put_hex(have, 8); endl();
}

static void cmd_read(int argc, char **argv) { /* ek-read [N [OFFSET]]: header line, N raw bytes, CRLF */
  uint32_t n = EK_MODEL_OUTPUT_BYTES, off = 0;
  if (argc > 3 || (argc > 1 && !parse_u32(argv[1], &n)) || (argc > 2 && !parse_u32(argv[2], &off)) ||
      n > EK_MODEL_OUTPUT_BYTES || off > EK_MODEL_OUTPUT_BYTES - n) { err("ek-read: N offset out of range]"); return; }
  if (!have_results) { err("ek-read: no results, run infer or ek-time first]"); return; }
  put("m-ek-read-"); put_u64(n); put("-"); put_hex(res_crc, 8); endl(); /* the input these results came from */
  out(OUT + off, n);
  endl();
}

/* ek-time / ek-profile: `runs` inferences on the loaded input, checked first against the host's CRC of the
   whole input (argv[i], optional); m-ek-input-CRC says what they run on. 0 when they may run. */
static int input_checked(uint32_t runs, int argc, char **argv, int i) {
  uint32_t want = 0;
  if (argc > i + 1 || (argc == i + 1 && !parse_hex32(argv[i], &want))) { err("ek: input CRC must be hex]"); return -1; }
  if (load_incomplete()) return -1;
  if (argc == i + 1 && input_gone()) { err("damaged input: consumed by the last inference, load it again]"); return -1; }
  if (input_prepare(runs)) return -1;
  input_ready();
  run_crc = ek_crc32(0, IN, EK_MODEL_INPUT_BYTES);
  if (argc == i + 1 && run_crc != want) {
    put("e-[damaged input: crc "); put_hex(run_crc, 8); put(" expected "); put_hex(want, 8); put(", load it again]");
    endl(); return -1;
  }
  put("m-ek-input-"); put_hex(run_crc, 8); endl();
  return 0;
}

/* ek-time holds up to this many counts, for at most EK_TIME_HOLD_US, before it writes their lines: a host woken
   by every line of millisecond inferences runs beside the next one, on a core the model's threads use */
#define EK_TIME_HELD 16
#define EK_TIME_HOLD_US 100000u

static void cmd_time(int argc, char **argv) { /* ek-time N [INCRC]: one m-ek-time-COUNT line per inference */
  uint32_t n, held = 0;
  uint64_t counts[EK_TIME_HELD], since = 0;
  if (argc < 2 || !parse_u32(argv[1], &n) || n == 0 || n > EK_MAX_ITERS) {
    err("ek-time: use ek-time N [INPUT_CRC32HEX] with N > 0]");
    return;
  }
  if (input_checked(n, argc, argv, 2)) return;
  while (n--) {
    input_ready(); /* outside the count: restoring the input is the protocol's work, not the model's */
    uint64_t t0 = ek_port_counter();
    if (!held) since = t0;
    if (run_model()) return; /* its error ends the reply: the counts held are no use to a failed command */
    counts[held++] = ek_port_counter() - t0;
    if (!n || held == EK_TIME_HELD || ek_port_counter() - since >= (uint64_t)EK_TIME_HOLD_US * ek_port_counter_per_us) {
      for (uint32_t i = 0; i < held; i++) { put("m-ek-time-"); put_u64(counts[i]); endl(); }
      held = 0;
    }
  }
}

static void cmd_profile(int argc, char **argv) { /* one inference; the layer hook stamps the counter after each kernel */
  if (input_checked(1, argc, argv, 1)) return;
  EK_MODEL_LAYER_HOOK = hook;
  stamps[0] = ek_port_counter();
  for (int i = 1; i <= EK_MODEL_NUM_LAYERS; i++) stamps[i] = stamps[0];
  int rc = run_model();
  EK_MODEL_LAYER_HOOK = 0;
  if (rc) return;
  for (int i = 0; i < EK_MODEL_NUM_LAYERS; i++) {
    put("m-ek-layer-"); put_u64((uint64_t)i); put("-");
    put_u64(stamps[i + 1] > stamps[i] ? stamps[i + 1] - stamps[i] : 0); put("-");
    put(EK_MODEL_LAYER_NAMES[i]); endl();
  }
}

static void cmd_sync(int argc, char **argv) { /* ek-sync TOKEN: echo it; a host finds its place in the stream */
  if (argc != 2 || strlen(argv[1]) > 16) { err("ek-sync: use ek-sync TOKEN (at most 16 characters)]"); return; }
  line("m-ek-sync-", argv[1]);
}

static void help(void) {
  static const char *const text[] = {
    EK_BOARD_NAME " edgekit firmware, MLPerf Tiny / EEMBC protocol; end each command with %",
    "name                 print the board name",
    "profile              print the benchmark profile and model",
    "timestamp            print microseconds since boot",
    "db load N            expect N input bytes, then db HEX... to send them",
    "db print [N] [off]   print N (16) input bytes from offset off as hex",
    "infer N [W]          W (10) warm-up runs, then N timed runs; print the results",
    "results              print the last results",
    "ek-* commands end with the CRC-32 (hex) of the text before it; replies end with m-ek-end-CRC",
    "ek-info              model name, hash, sizes, layers, board, counter, threads",
    "ek-load N CRC [off]  N raw input bytes at offset off, checked against CRC-32 (hex)",
    "ek-read [N] [off]    raw output bytes after a header with their input's CRC-32",
    "ek-time N [incrc]    N inferences, one counter reading each; incrc: the whole input's CRC-32",
    "ek-profile [incrc]   one inference, counter per layer",
    "ek-sync TOKEN        echo TOKEN"};
  for (size_t i = 0; i < sizeof text / sizeof *text; i++) line(text[i], "");
}

static const struct { const char *name; void (*run)(int, char **); } ek_cmds[] = {
  {"ek-info", cmd_info}, {"ek-load", cmd_load}, {"ek-read", cmd_read}, {"ek-time", cmd_time},
  {"ek-profile", cmd_profile}, {"ek-sync", cmd_sync}};

/* an ek-* command: check its CRC (the last word, over the text before it), run it, end with m-ek-end-CRC */
static void ek_command(void (*run)(int, char **), int argc, char **argv, uint32_t text_crc) {
  uint32_t want;
  framed = 1; reply_crc = 0;
  if (argc < 2 || strlen(argv[argc - 1]) != 8 || !parse_hex32(argv[argc - 1], &want) || want != text_crc)
    err("damaged command: crc mismatch, send it again]");
  else run(argc - 1, argv);
  framed = 0;
  put("m-ek-end-"); put_hex(reply_crc, 8); endl();
}

static void dispatch(char *s) {
  char *argv[MAX_ARGS], *last = strrchr(s, ' ');
  uint32_t text_crc = last ? ek_crc32(0, s, (size_t)(last - s)) : 0; /* an ek-* command's text before its CRC */
  int argc = 0;
  for (;;) { /* split on spaces in place (newlib's strtok drags in malloc and printf) */
    while (*s == ' ') *s++ = 0;
    if (!*s) break;
    if (argc == MAX_ARGS) { err("Too many arguments]"); return; }
    argv[argc++] = s;
    while (*s && *s != ' ') s++;
  }
  if (argc == 0) return; /* a bare % only asks for m-ready */
  const char *c = argv[0];
  for (size_t i = 0; i < sizeof ek_cmds / sizeof *ek_cmds; i++)
    if (!strcmp(c, ek_cmds[i].name)) { ek_command(ek_cmds[i].run, argc, argv, text_crc); return; }
  if (!strcmp(c, "name")) line("m-name-dut-[" EK_BOARD_NAME "]", "");
  else if (!strcmp(c, "profile")) line("m-profile-[ULPMark for tinyML Firmware V0.0.1]\r\nm-model-[" PROFILE_MODEL "]", "");
  else if (!strcmp(c, "help")) help();
  else if (!strcmp(c, "timestamp")) lap();
  else if (!strcmp(c, "db")) cmd_db(argc, argv);
  else if (!strcmp(c, "infer")) cmd_infer(argc, argv);
  else if (!strcmp(c, "results")) { if (have_results) results(); else err("No results: run infer first]"); }
  else { put("e-[Unknown command: "); put(c); put("]"); endl(); }
}

void ek_boot(void) {
  db_want = db_have = 0;
  have_results = 0;
#if EK_INPUT_IN_ARENA
  memset(IN, 0, EK_MODEL_INPUT_BYTES); /* the input reads as zeros after boot, as a static buffer would */
  slot_ok = 1; copy_ok = 0;
#endif
  olen = 0;
  line("m-timestamp-mode-performance", "");
  line("m-init-done", "");
  line("m-ready", "");
}

int ek_step(void) {
  char s[CMD_MAX + 1];
  size_t n = 0;
  int too_long = 0;
  for (;;) {
    int c = ek_port_getc(0);
    if (c == EK_EOF) return -1;
    if (c == '%') break;
    if (c < 0 || c == '\r' || c == '\n') continue;
    if (n < CMD_MAX) s[n++] = (char)c; else too_long = 1;
  }
  s[n] = 0;
  if (too_long) err("Command too long: at most 80 characters]");
  else dispatch(s);
  line("m-ready", "");
  return 0;
}
