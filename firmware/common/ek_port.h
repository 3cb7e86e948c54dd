/* ek_port.h: what a board supplies to the portable protocol core (one small port per board). */
#ifndef EK_PORT_H
#define EK_PORT_H
#include <stddef.h>
#include <stdint.h>

#define EK_TIMEOUT (-1) /* ek_port_getc: no byte within the timeout */
#define EK_EOF (-2)     /* ek_port_getc: the input is gone for good (host ports only) */

void ek_port_init(int argc, char **argv);    /* clocks, serial port, counter */
int ek_port_getc(uint32_t timeout_ms);       /* next byte 0..255, EK_TIMEOUT or EK_EOF; 0 = wait forever */
void ek_port_write(const void *buf, size_t n);
uint64_t ek_port_counter(void);              /* monotonic, in units of ek_port_counter_name */
uint32_t ek_port_threads(void);              /* threads the model runs on; optional (weak default 1) */

extern const char ek_port_counter_name[];    /* "instructions" (QEMU icount), "cycles" (silicon), "ns" (Linux) */
extern const uint32_t ek_port_counter_per_us; /* counter units per microsecond of (virtual) time */
extern const char ek_port_timer[];           /* how the counter is made, no spaces */
#endif
