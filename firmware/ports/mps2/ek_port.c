/* mps2: Arm MPS2 FPGA images (AN386 Cortex-M4F, AN500 Cortex-M7) as QEMU emulates them.
   CMSDK APB UART (RX by interrupt), SysTick as the counter: DWT_CYCCNT reads 0 in QEMU, while SysTick
   under -icount shift=0 advances 25 MHz per GHz of instructions, i.e. one tick = 40 instructions. */
#include "ek_cortexm.h"
#include "ek_port.h"

#ifndef EK_UART_BASE
#define EK_UART_BASE 0x40004000
#endif
#ifndef EK_UART_IRQ
#define EK_UART_IRQ 0
#endif
#define UART_DATA EK_REG(EK_UART_BASE + 0x00)
#define UART_STATE EK_REG(EK_UART_BASE + 0x04) /* bit0 TX full, bit1 RX full */
#define UART_CTRL EK_REG(EK_UART_BASE + 0x08)  /* bit0 TX enable, bit1 RX enable, bit3 RX interrupt */
#define UART_INTCLEAR EK_REG(EK_UART_BASE + 0x0C)
#define UART_BAUDDIV EK_REG(EK_UART_BASE + 0x10)
#define SYSCLK_HZ 25000000u
#define TICK_INSNS 40u         /* 1e9 instructions/s (icount shift=0) / 25 MHz */
#define RELOAD ((1u << 20) - 1) /* a wrap every ~42 ms: also the WFI wake-up that drives timeouts */

const char ek_port_counter_name[] = "instructions";
const uint32_t ek_port_counter_per_us = 1000; /* icount shift=0: one instruction per virtual ns */
const char ek_port_timer[] = "SysTick@25MHz*40(qemu-icount-shift=0)";
static volatile uint32_t wraps;

void ek_port_systick(void) { wraps++; }

uint64_t ek_port_counter(void) {
  uint32_t hi, v;
  do { hi = wraps; v = SYST_CVR; } while (hi != wraps); /* a wrap between the two reads: read again */
  return ((uint64_t)hi * (RELOAD + 1) + (RELOAD - v)) * TICK_INSNS;
}

void ek_port_irq(void) {
  UART_INTCLEAR = 2; /* clear first: a byte landing after the last read then raises a new interrupt */
  while (UART_STATE & 2) ek_rx_push((uint8_t)UART_DATA);
}

void ek_port_write(const void *buf, size_t n) {
  for (const uint8_t *p = buf; n--; p++) {
    while (UART_STATE & 1) {}
    UART_DATA = *p;
  }
}

void ek_port_init(int argc, char **argv) {
  (void)argc; (void)argv;
  SYST_RVR = RELOAD;
  SYST_CVR = 0;
  SYST_CSR = 7;
  UART_BAUDDIV = SYSCLK_HZ / 115200; /* QEMU ignores the rate but refuses a divider below 16 */
  UART_CTRL = 1 | 2 | 8;
  ek_nvic_enable(EK_UART_IRQ);
  ek_port_irq(); /* a byte already waiting when the interrupt was enabled raises none: drain it */
}
