/* ek_fuzz.c: libFuzzer harness: a port whose serial input is the fuzz input, so every byte sequence
   (commands, binary loads, garbage) goes through the protocol core under AddressSanitizer.
   The first byte picks how: even, the rest as it comes; odd, with the CRC word ek-* commands need appended
   to every %-ended piece starting "ek-", so the fuzzer reaches their handlers, not only their refusal.
   Build: clang -fsanitize=fuzzer,address -DEK_MAX_ITERS=64 common/ek_protocol.c common/ek_crc32.c
          fuzz/ek_fuzz.c MODEL/*.c -I common -I MODEL -I DIR_WITH_ek_model_config.h */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ek_crc32.h"
#include "ek_port.h"
#include "ek_protocol.h"

const char ek_port_counter_name[] = "ticks";
const uint32_t ek_port_counter_per_us = 1;
const char ek_port_timer[] = "fuzz";
static const uint8_t *data;
static size_t size, pos;
static uint64_t now;

void ek_port_init(int argc, char **argv) { (void)argc; (void)argv; }
int ek_port_getc(uint32_t timeout_ms) { (void)timeout_ms; return pos < size ? data[pos++] : EK_EOF; }
void ek_port_write(const void *buf, size_t n) { /* read every byte so ASan sees an out-of-bounds write */
  static volatile uint8_t sink;
  for (const uint8_t *p = buf; n--; p++) sink ^= *p;
}
uint64_t ek_port_counter(void) { return now += 7; }

static size_t with_crcs(const uint8_t *d, size_t n, uint8_t *o) { /* o: room for 4n bytes */
  size_t k = 0, start = 0;
  for (size_t i = 0; i < n; i++) {
    if (d[i] == '%' && i - start >= 3 && !memcmp(d + start, "ek-", 3)) {
      char w[10];
      snprintf(w, sizeof w, " %08x", (unsigned)ek_crc32(0, d + start, i - start));
      memcpy(o + k, w, 9);
      k += 9;
    }
    o[k++] = d[i];
    if (d[i] == '%') start = i + 1;
  }
  return k;
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
  uint8_t *framed = NULL;
  if (n == 0) return 0;
  data = d + 1; size = n - 1; pos = 0;
  if (d[0] & 1) {
    framed = malloc(4 * n);
    size = with_crcs(d + 1, n - 1, framed);
    data = framed;
  }
  ek_boot();
  while (ek_step() == 0) {}
  free(framed);
  return 0;
}
