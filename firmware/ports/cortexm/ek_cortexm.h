/* ek_cortexm.h: the Armv7-M core registers edgekit's Cortex-M ports use (ARMv7-M Architecture Reference Manual). */
#ifndef EK_CORTEXM_H
#define EK_CORTEXM_H
#include <stdint.h>

#define EK_REG(addr) (*(volatile uint32_t *)(addr))
#define SYST_CSR EK_REG(0xE000E010) /* bit0 enable, bit1 tick interrupt, bit2 processor clock */
#define SYST_RVR EK_REG(0xE000E014)
#define SYST_CVR EK_REG(0xE000E018)
#define NVIC_ISER(n) EK_REG(0xE000E100 + 4 * (n))
#define SCB_VTOR EK_REG(0xE000ED08)
#define SCB_CPACR EK_REG(0xE000ED88)
#define DEMCR EK_REG(0xE000EDFC)  /* bit24 TRCENA: powers the DWT */
#define DWT_CTRL EK_REG(0xE0001000) /* bit0 CYCCNTENA */
#define DWT_CYCCNT EK_REG(0xE0001004)
#define DWT_LAR EK_REG(0xE0001FB0)  /* Cortex-M7 locks the DWT until 0xC5ACCE55 is written here */

static inline uint32_t ek_irq_save(void) {
  uint32_t p;
  __asm volatile("mrs %0, primask\n cpsid i" : "=r"(p)::"memory");
  return p;
}
static inline void ek_irq_restore(uint32_t p) { __asm volatile("msr primask, %0" ::"r"(p) : "memory"); }
static inline void ek_nvic_enable(unsigned irq) { NVIC_ISER(irq / 32) = 1u << (irq % 32); }

void ek_rx_push(uint8_t c);   /* called by the port's UART interrupt */
void ek_port_irq(void);       /* the port's one interrupt handler (its UART RX) */
void ek_port_systick(void);   /* the port's SysTick handler */
#endif
