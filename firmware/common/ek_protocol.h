/* ek_protocol.h: the MLPerf Tiny / EEMBC serial protocol plus edgekit's ek-* commands (see firmware/README.md). */
#ifndef EK_PROTOCOL_H
#define EK_PROTOCOL_H
void ek_boot(void); /* reset the protocol state and print the boot lines */
int ek_step(void);  /* read and answer one command; -1 once the port reports EK_EOF */
#endif
