/* stm32f7: STM32F746G-DISCO. HSI16 -> PLL 216 MHz with over-drive, USART1 on PA9/PB7 (AF7) = ST-LINK VCP.
   Register addresses from RM0385 (STM32F75x/74x). */
#define EK_CLOCK_HZ 216000000u
#define EK_USART_BASE 0x40011000u /* USART1 on APB2 = 108 MHz */
#define EK_USART_IRQ 37
#define EK_USART_BRR 938u         /* 108 MHz / 115200, oversampling by 16 */
#include "ek_stm32.h"

#define RCC 0x40023800u
#define RCC_CR EK_REG(RCC + 0x00)      /* bit0 HSION, bit24 PLLON, bit25 PLLRDY */
#define RCC_PLLCFGR EK_REG(RCC + 0x04) /* PLLM 5:0, PLLN 14:6, PLLP 17:16, PLLSRC 22, PLLQ 27:24 */
#define RCC_CFGR EK_REG(RCC + 0x08)    /* SW 1:0, SWS 3:2, HPRE 7:4, PPRE1 12:10, PPRE2 15:13 */
#define RCC_AHB1ENR EK_REG(RCC + 0x30)
#define RCC_APB1ENR EK_REG(RCC + 0x40)
#define RCC_APB2ENR EK_REG(RCC + 0x44)
#define PWR_CR1 EK_REG(0x40007000u)    /* bit16 ODEN, bit17 ODSWEN; VOS 15:14 resets to scale 1 */
#define PWR_CSR1 EK_REG(0x40007004u)   /* bit16 ODRDY, bit17 ODSWRDY */
#define FLASH_ACR EK_REG(0x40023C00u)
#define GPIOA 0x40020000u
#define GPIOB 0x40020400u
#define SCB_CCR EK_REG(0xE000ED14)
#define SCB_ICIALLU EK_REG(0xE000EF50)

static void clock_216mhz(void) {
  RCC_APB1ENR |= 1u << 28; /* PWR */
  RCC_PLLCFGR = (RCC_PLLCFGR & 0xF0000000u) | 8u | 216u << 6 | 9u << 24; /* HSI 16 MHz /8 *216 = 432 MHz, P /2, Q /9 */
  RCC_CR |= 1u << 24;
  while (!(RCC_CR & (1u << 25))) {}
  PWR_CR1 |= 1u << 16; /* over-drive: above 180 MHz (RM0385 4.1.4) */
  while (!(PWR_CSR1 & (1u << 16))) {}
  PWR_CR1 |= 1u << 17;
  while (!(PWR_CSR1 & (1u << 17))) {}
  FLASH_ACR = 7 | 1u << 8 | 1u << 9; /* 7 wait states at 216 MHz, prefetch, ART */
  while ((FLASH_ACR & 15) != 7) {}
  RCC_CFGR = 5u << 10 | 4u << 13 | 2u; /* APB1 /4 = 54 MHz, APB2 /2 = 108 MHz, SYSCLK = PLL */
  while ((RCC_CFGR & 0xCu) != 0x8u) {}
}

void ek_port_init(int argc, char **argv) {
  (void)argc; (void)argv;
  clock_216mhz();
  __asm volatile("dsb\n isb");
  SCB_ICIALLU = 0; /* Cortex-M7 instruction cache: invalidate, then enable */
  __asm volatile("dsb\n isb");
  SCB_CCR |= 1u << 17;
  __asm volatile("dsb\n isb");
  RCC_AHB1ENR |= 3u;      /* GPIOA, GPIOB */
  RCC_APB2ENR |= 1u << 4; /* USART1, clocked from PCLK2 (DCKCFGR2 reset value) */
  EK_REG(GPIOA + 0x00) = (EK_REG(GPIOA + 0x00) & ~(3u << 18)) | 2u << 18; /* PA9 alternate function 7 */
  EK_REG(GPIOA + 0x24) = (EK_REG(GPIOA + 0x24) & ~(0xFu << 4)) | 7u << 4;
  EK_REG(GPIOB + 0x00) = (EK_REG(GPIOB + 0x00) & ~(3u << 14)) | 2u << 14; /* PB7 alternate function 7 */
  EK_REG(GPIOB + 0x20) = (EK_REG(GPIOB + 0x20) & ~(0xFu << 28)) | 7u << 28;
  ek_stm32_start();
}
