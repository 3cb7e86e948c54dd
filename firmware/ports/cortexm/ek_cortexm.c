/* ek_cortexm.c: start-up, vector table and interrupt-fed receive ring shared by the Cortex-M ports. */
#include <string.h>
#include "ek_cortexm.h"
#include "ek_port.h"

#ifndef EK_NUM_IRQS
#define EK_NUM_IRQS 112 /* covers STM32F7 (98) and STM32L4+ (95) */
#endif
#define RX_SIZE 1024 /* power of two; the core drains it while a load runs, so it only absorbs latency */

extern uint32_t _estack, _sidata, _sdata, _edata, _sbss, _ebss; /* from the generated linker script */
int main(int argc, char **argv);
void ek_reset(void);

static void hang(void) { for (;;) {} }

/* A port enables exactly one interrupt (its UART RX), so every external vector may point at its handler.
   (Range designators are GNU C, as is the inline assembly: arm-none-eabi-gcc builds these ports.) */
__attribute__((section(".isr_vector"), used)) void (*const ek_vectors[16 + EK_NUM_IRQS])(void) = {
  [0] = (void (*)(void))&_estack, [1] = ek_reset, [2 ... 14] = hang, [15] = ek_port_systick,
  [16 ... 16 + EK_NUM_IRQS - 1] = ek_port_irq};

void ek_reset(void) {
#if defined(__ARM_FP) /* a core without an FPU (Cortex-M3) has no CPACR */
  SCB_CPACR |= 0xFu << 20; /* CP10/CP11 full access: the FPU must be on before any float instruction */
  __asm volatile("dsb\n isb");
#endif
  SCB_VTOR = (uint32_t)ek_vectors;
  memcpy(&_sdata, &_sidata, (size_t)((char *)&_edata - (char *)&_sdata));
  memset(&_sbss, 0, (size_t)((char *)&_ebss - (char *)&_sbss));
  main(0, 0);
  hang();
}

static uint8_t rx[RX_SIZE];
static volatile uint32_t rx_head, rx_tail;

void ek_rx_push(uint8_t c) { /* a full ring drops the byte: the ek-load CRC catches it */
  if (rx_head - rx_tail < RX_SIZE) { rx[rx_head % RX_SIZE] = c; rx_head++; }
}

int ek_port_getc(uint32_t timeout_ms) {
  uint64_t start = ek_port_counter(), limit = (uint64_t)timeout_ms * 1000u * ek_port_counter_per_us;
  for (;;) {
    uint32_t p = ek_irq_save(); /* check and sleep with interrupts masked: WFI still wakes on a pending one */
    if (rx_head != rx_tail) {
      int c = rx[rx_tail % RX_SIZE];
      rx_tail++;
      ek_irq_restore(p);
      return c;
    }
    __asm volatile("wfi");
    ek_irq_restore(p);
    if (timeout_ms && ek_port_counter() - start >= limit) return EK_TIMEOUT;
  }
}
