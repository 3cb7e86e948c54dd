"""Int8 front end: full-integer TFLite models (a user's, or quantized by TensorFlow's converter) as Relax
modules of edgekit's own integer TE kernels, bit-exact with TFLite's reference kernels."""
