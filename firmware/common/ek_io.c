/* ek_io.c: the runner's raw input into the model's input, the model's output into scores (see ek_io.h).
   What each benchmark sends and reports is declared by the build in ek_model_config.h (edgekit/mlperf.py). */
#include <string.h>
#include "ek_io.h"
#include "ek_model_config.h"

/* a build without a declared output type (tests' fake models): float32 scores */
#ifndef EK_OUTPUT_INT8
#define EK_OUTPUT_INT8 0
#endif
#ifndef EK_OUTPUT_COUNT
#define EK_OUTPUT_COUNT (EK_MODEL_OUTPUT_BYTES / (EK_OUTPUT_INT8 ? 1 : 4))
#endif
#ifndef EK_MLPERF_SCORE_MSE
#define EK_MLPERF_SCORE_MSE 0
#endif

#ifdef EK_MLPERF_RAW_BYTES
#if EK_MLPERF_RAW_U8
/* uint8 pixels: a table the build computed from the input's scale and zero point (or the float each pixel
   stands for): one lookup per byte, exactly what the host computes */
static const EK_INPUT_CTYPE pixel[256] = {EK_MLPERF_PIXEL_TABLE};
static EK_INPUT_CTYPE raw_value(const uint8_t *raw, uint32_t i) { return pixel[raw[i]]; }
#elif EK_MLPERF_RAW_I8
static EK_INPUT_CTYPE raw_value(const uint8_t *raw, uint32_t i) { return (EK_INPUT_CTYPE)(int8_t)raw[i]; }
#elif EK_MLPERF_RAW_F32
static EK_INPUT_CTYPE raw_value(const uint8_t *raw, uint32_t i) {
  float f;
  memcpy(&f, raw + 4 * i, 4);
#if EK_INPUT_INT8 /* TFLite's quantization: round half away from zero, then clamp */
  float q = f / EK_INPUT_SCALE;
  int32_t r = (int32_t)(q < 0 ? q - 0.5f : q + 0.5f) + EK_INPUT_ZERO_POINT;
  return (EK_INPUT_CTYPE)(r < -128 ? -128 : r > 127 ? 127 : r);
#else
  return f;
#endif
}
#endif

void ek_io_convert(const uint8_t *raw, uint8_t *input) {
  EK_INPUT_CTYPE v;
  for (uint32_t i = 0; i < EK_INPUT_COUNT; i++) {
    v = raw_value(raw, i);
    /* the runner sends HWC; an NCHW model reads channel planes */
    uint32_t at = EK_MLPERF_TO_CHW ? (i % EK_MLPERF_TO_CHW) * (EK_INPUT_COUNT / EK_MLPERF_TO_CHW) + i / EK_MLPERF_TO_CHW : i;
    memcpy(input + at * sizeof v, &v, sizeof v);
  }
}
#endif

static float output_value(const uint8_t *output, uint32_t i) {
#if EK_OUTPUT_INT8
  return (float)((int32_t)(int8_t)output[i] - EK_OUTPUT_ZERO_POINT) * EK_OUTPUT_SCALE;
#else
  float f;
  memcpy(&f, output + 4 * i, 4);
  return f;
#endif
}

uint32_t ek_io_score_count(void) { return EK_MLPERF_SCORE_MSE ? 1 : EK_OUTPUT_COUNT; }

float ek_io_score(const uint8_t *output, const uint8_t *raw, uint32_t i) {
#if EK_MLPERF_SCORE_MSE
  /* a reconstruction model (AD): one score, the mean squared error between the output and the float input */
  float sum = 0;
  (void)i;
  for (uint32_t k = 0; k < EK_OUTPUT_COUNT; k++) {
    float x, d;
    memcpy(&x, raw + 4 * k, 4);
    d = output_value(output, k) - x;
    sum += d * d;
  }
  return sum / EK_OUTPUT_COUNT;
#else
  (void)raw;
  return output_value(output, i);
#endif
}
