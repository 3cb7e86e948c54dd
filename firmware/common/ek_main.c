#include "ek_port.h"
#include "ek_protocol.h"

int main(int argc, char **argv) {
  ek_port_init(argc, argv);
  ek_boot();
  while (ek_step() == 0) {}
  return 0;
}
