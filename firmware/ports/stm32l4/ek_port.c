/* stm32l4: NUCLEO-L4R5ZI. HSI16 -> PLL 120 MHz (range 1 boost), LPUART1 on PG7/PG8 (AF8) = ST-LINK VCP.
   Register addresses from RM0432 (STM32L4+). */
#define EK_CLOCK_HZ 120000000u
#define EK_USART_BASE 0x40008000u /* LPUART1 */
#define EK_USART_IRQ 70
#define EK_USART_BRR 266667u      /* LPUART: 256 * 120 MHz / 115200 */
#include "ek_stm32.h"

#define RCC 0x40021000u
#define RCC_CR EK_REG(RCC + 0x00)      /* bit8 HSION, bit10 HSIRDY, bit24 PLLON, bit25 PLLRDY */
#define RCC_CFGR EK_REG(RCC + 0x08)    /* SW 1:0, SWS 3:2, HPRE 7:4 */
#define RCC_PLLCFGR EK_REG(RCC + 0x0C) /* PLLSRC 1:0, PLLM 7:4, PLLN 14:8, PLLREN 24, PLLR 26:25 */
#define RCC_AHB2ENR EK_REG(RCC + 0x4C)
#define RCC_APB1ENR1 EK_REG(RCC + 0x58)
#define RCC_APB1ENR2 EK_REG(RCC + 0x5C)
#define PWR_CR2 EK_REG(0x40007004u)    /* bit9 IOSV: port G sits on VDDIO2, isolated until set */
#define PWR_CR5 EK_REG(0x40007080u)    /* bit8 R1MODE: 0 = range 1 boost, needed above 80 MHz */
#define FLASH_ACR EK_REG(0x40022000u)
#define GPIOG 0x48001800u
#define GPIOG_MODER EK_REG(GPIOG + 0x00)
#define GPIOG_AFRL EK_REG(GPIOG + 0x20)
#define GPIOG_AFRH EK_REG(GPIOG + 0x24)

static void clock_120mhz(void) {
  RCC_APB1ENR1 |= 1u << 28; /* PWR */
  (void)RCC_APB1ENR1;       /* read back: the clock takes effect before PWR is touched */
  RCC_CFGR = (RCC_CFGR & ~0xF0u) | 0x80u; /* AHB /2 across the boost switch (RM0432 6.2.9) */
  PWR_CR5 &= ~(1u << 8);
  FLASH_ACR = 5 | 7u << 8; /* 5 wait states at 120 MHz, prefetch, I- and D-cache */
  while ((FLASH_ACR & 15) != 5) {}
  RCC_CR |= 1u << 8;
  while (!(RCC_CR & (1u << 10))) {}
  RCC_PLLCFGR = 2 | 0u << 4 | 15u << 8 | 1u << 24 | 0u << 25; /* 16 MHz /1 *15 = 240 MHz VCO, /2 */
  RCC_CR |= 1u << 24;
  while (!(RCC_CR & (1u << 25))) {}
  RCC_CFGR = (RCC_CFGR & ~3u) | 3u;
  while ((RCC_CFGR & 0xCu) != 0xCu) {}
  for (volatile int i = 0; i < 200; i++) {} /* >= 1 us at the halved clock before AHB /1 */
  RCC_CFGR &= ~0xF0u;
}

void ek_port_init(int argc, char **argv) {
  (void)argc; (void)argv;
  clock_120mhz();
  PWR_CR2 |= 1u << 9;
  RCC_AHB2ENR |= 1u << 6;  /* GPIOG */
  RCC_APB1ENR2 |= 1u << 0; /* LPUART1, clocked from PCLK1 (CCIPR reset value) */
  GPIOG_MODER = (GPIOG_MODER & ~(0xFu << 14)) | 0xAu << 14; /* PG7, PG8 alternate function */
  GPIOG_AFRL = (GPIOG_AFRL & ~(0xFu << 28)) | 8u << 28;
  GPIOG_AFRH = (GPIOG_AFRH & ~0xFu) | 8u;
  ek_stm32_start();
}
