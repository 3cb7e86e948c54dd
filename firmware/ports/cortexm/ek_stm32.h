/* ek_stm32.h: what the STM32 ports share: the USART/LPUART (same register map on L4 and F7) and a 64-bit
   DWT cycle counter. Included once by each STM32 port; it sets EK_USART_BASE, EK_USART_IRQ, EK_USART_BRR. */
#include "ek_cortexm.h"
#include "ek_port.h"

#define USART_CR1 EK_REG(EK_USART_BASE + 0x00) /* bit0 UE, bit2 RE, bit3 TE, bit5 RXNEIE */
#define USART_BRR EK_REG(EK_USART_BASE + 0x0C)
#define USART_ISR EK_REG(EK_USART_BASE + 0x1C) /* bit3 ORE, bit5 RXNE, bit7 TXE */
#define USART_ICR EK_REG(EK_USART_BASE + 0x20)
#define USART_RDR EK_REG(EK_USART_BASE + 0x24)
#define USART_TDR EK_REG(EK_USART_BASE + 0x28)

const char ek_port_counter_name[] = "cycles";
const uint32_t ek_port_counter_per_us = EK_CLOCK_HZ / 1000000u;
const char ek_port_timer[] = "DWT_CYCCNT";
static uint32_t cyc_hi, cyc_last;

uint64_t ek_port_counter(void) { /* extends the 32-bit CYCCNT; SysTick calls it often enough to see every wrap */
  uint32_t p = ek_irq_save(), now = DWT_CYCCNT;
  if (now < cyc_last) cyc_hi++;
  cyc_last = now;
  uint64_t r = (uint64_t)cyc_hi << 32 | now;
  ek_irq_restore(p);
  return r;
}

void ek_port_systick(void) { (void)ek_port_counter(); }

void ek_port_irq(void) {
  if (USART_ISR & (1u << 3)) USART_ICR = 1u << 3; /* an overrun stops reception until cleared */
  while (USART_ISR & (1u << 5)) ek_rx_push((uint8_t)USART_RDR);
}

void ek_port_write(const void *buf, size_t n) {
  for (const uint8_t *p = buf; n--; p++) {
    while (!(USART_ISR & (1u << 7))) {}
    USART_TDR = *p;
  }
}

static void ek_stm32_start(void) { /* after clocks and pins: counter, heartbeat, USART */
  DEMCR |= 1u << 24;
  DWT_LAR = 0xC5ACCE55;
  DWT_CYCCNT = 0;
  DWT_CTRL |= 1;
  SYST_RVR = 0xFFFFFF; /* every 2^24 cycles, far inside CYCCNT's 2^32 wrap */
  SYST_CVR = 0;
  SYST_CSR = 7;
  USART_BRR = EK_USART_BRR;
  USART_CR1 = 1 | 4 | 8 | 32;
  ek_nvic_enable(EK_USART_IRQ);
}
