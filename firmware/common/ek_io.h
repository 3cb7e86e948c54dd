/* ek_io.h: the model's input and output as the MLPerf Tiny runner sees them (firmware/README.md, "MLPerf Tiny").
   An --mlperf build takes the runner's raw input (EK_MLPERF_RAW_BYTES) and converts it into the model's input, as
   the reference porting layers' th_load_tensor do; every build reports dequantized output scores (th_results). */
#ifndef EK_IO_H
#define EK_IO_H
#include <stdint.h>

#ifdef EK_MLPERF_RAW_BYTES
/* raw: the runner's db buffer, complete; input: the model's input tensor */
void ek_io_convert(const uint8_t *raw, uint8_t *input);
#endif
/* the scores `results` prints: the dequantized outputs, or one reconstruction error computed from the output
   and the raw input (AD) */
uint32_t ek_io_score_count(void);
float ek_io_score(const uint8_t *output, const uint8_t *raw, uint32_t i);
#endif
