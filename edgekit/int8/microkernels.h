/* edgekit's int8 micro-kernels: multiply-accumulates of int8 vectors, called by TVM's kernels (call_extern).
 * With EK_DSP (targets declaring the DSP extension: Cortex-M4/M7/M33) four int8 pairs go through two
 * SXTB16 each (bytes 0,2 and, rotated by 8, bytes 1,3 sign-extended to 16-bit halves) and two SMLAD (two
 * 16x16 multiplies added to the accumulator); elsewhere plain C. Same integer result either way. */
#include <stdint.h>
#include <string.h>
#if (defined(__ARM_FEATURE_SAT) && __ARM_FEATURE_SAT) || defined(EK_DSP)
#include <arm_acle.h> /* __ssat (every ARMv7-M core), __sxtb16 / __smlad (the DSP extension) */
#endif

/* non-const pointers: TVM declares its extern calls with the argument types it passes */

#if defined(EK_DSP)

/* SXTB16 with its free ROR #8 operand (ACLE's __sxtb16(__ror(x, 8)) costs a separate ROR with gcc 12);
 * not volatile, so the compiler may share it between calls like a pure function */
static inline int32_t ek_sxtb16_ror8(int32_t x) {
  int32_t r;
  __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
  return r;
}

static inline int32_t ek_word(int8_t *p) {
  int32_t v;
  memcpy(&v, p, 4); /* one LDR (unaligned access is allowed on ARMv7-M) */
  return v;
}

/* acc + the dot product of x[0:4] and w[0:4] */
static inline int32_t ek_mac4_s8(int32_t acc, int8_t *x, int8_t *w) {
  int32_t a = ek_word(x), b = ek_word(w);
  return __smlad(ek_sxtb16_ror8(a), ek_sxtb16_ror8(b), __smlad(__sxtb16(a), __sxtb16(b), acc));
}

static inline int32_t ek_mac8_s8(int32_t acc, int8_t *x, int8_t *w) {
  return ek_mac4_s8(ek_mac4_s8(acc, x, w), x + 4, w + 4);
}

#else

static inline int32_t ek_mac4_s8(int32_t acc, int8_t *x, int8_t *w) {
  return acc + x[0] * w[0] + x[1] * w[1] + x[2] * w[2] + x[3] * w[3];
}

static inline int32_t ek_mac8_s8(int32_t acc, int8_t *x, int8_t *w) {
  return ek_mac4_s8(ek_mac4_s8(acc, x, w), x + 4, w + 4);
}

#endif

/* The output zero point added, clamped to [lo, hi]: one SSAT for the full int8 range (ReLU6 calibrated to
 * [0, 6] has exactly that range). SSAT is in every ARMv7-M core. */
static inline int32_t ek_clamp(int32_t q, int32_t lo, int32_t hi) {
#if defined(__ARM_FEATURE_SAT) && __ARM_FEATURE_SAT
  if (lo == -128 && hi == 127) return __ssat(q, 8);
#endif
  return q < lo ? lo : q > hi ? hi : q;
}

/* TFLite's MultiplyByQuantizedMultiplier for a right shift (shift = -right <= -1), as fixedpoint.mbqm_right:
 * the high product h = floor((x * mult + 2^30) / 2^31), then h / 2^right rounded half away from zero
 * (half = 2^(right - 1), precomputed; h < 0 exactly when x * mult + 2^30 < 0); plus zp, clamped. One
 * 32x32->64 multiply (TVM's C widened the int32 sum first and multiplied in 64x64 bits). */
static inline int32_t ek_requant_right(int32_t x, int32_t mult, int32_t right, int32_t half, int32_t zp, int32_t lo,
                                       int32_t hi) {
  int32_t h = (int32_t)(((int64_t)x * mult + (1 << 30)) >> 31);
  return ek_clamp(((h + half - (int32_t)((uint32_t)h >> 31)) >> right) + zp, lo, hi);
}

/* The same for |x| < 2^30 (the importer bounds it per channel from the weights and bias): then
 * floor((2x * mult + 2^31) / 2^32) = h, one SMMULR on cores with the DSP extension. */
static inline int32_t ek_requant_right_small(int32_t x, int32_t mult, int32_t right, int32_t half, int32_t zp,
                                             int32_t lo, int32_t hi) {
#if defined(EK_DSP)
  int32_t h;
  __asm__("smmulr %0, %1, %2" : "=r"(h) : "r"(x * 2), "r"(mult));
  return ek_clamp(((h + half - (int32_t)((uint32_t)h >> 31)) >> right) + zp, lo, hi);
#else
  return ek_requant_right(x, mult, right, half, zp, lo, hi);
#endif
}
