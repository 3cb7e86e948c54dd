/* ek_crc32.h: CRC-32 as zlib/PNG compute it (reflected 0xEDB88320), so Python's zlib.crc32 agrees. */
#ifndef EK_CRC32_H
#define EK_CRC32_H
#include <stddef.h>
#include <stdint.h>
uint32_t ek_crc32(uint32_t crc, const void *data, size_t n); /* start with crc = 0 */
#endif
