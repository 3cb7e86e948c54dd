/* ek_fuzz.c: libFuzzer harness: a port whose serial input is the fuzz input, so every byte sequence
   (commands, binary loads, garbage) goes through the protocol core under AddressSanitizer.
   Build: clang -fsanitize=fuzzer,address -DEK_MAX_ITERS=64 common/ek_protocol.c common/ek_crc32.c
          fuzz/ek_fuzz.c MODEL/*.c -I common -I MODEL -I DIR_WITH_ek_model_config.h */
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

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
  data = d; size = n; pos = 0;
  ek_boot();
  while (ek_step() == 0) {}
  return 0;
}
