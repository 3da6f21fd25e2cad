// Data-free equalization of the int8 GEMMs' input channels.
//
// An int8 GEMM quantizes each token's row over that row's own range
// (cpu::quantize_rows_u8), so one channel that is always much larger than
// the rest - the "outlier dimensions" of trained BERT-family models - spends
// the row's 255 steps on itself, and every other channel of the row is
// rounded coarsely. Equalization moves that spread into the weights, whose
// rows are quantized one output channel at a time: with a positive s per
// input channel c, x W^T = (x diag(1/s)) (W diag(s))^T exactly, and the int8
// GEMM quantizes the two factors (cpu::Gemm::pack's in_scale).
//
// s is chosen as SmoothQuant does, s_c = sqrt(range_c / max_o |W[o, c]|), so
// activations and weights each keep the square root of the spread. SmoothQuant
// measures range_c on calibration text; here it is predicted from the weights
// alone, the way data-free quantization predicts a layer's activations from
// the BatchNorm before it: every int8 GEMM's input is a LayerNorm's output
// gamma * n + beta, or a linear map of one, and n has zero mean and unit
// spread in each token. So no data, and the same numbers on every run.
#pragma once

#include <vector>

namespace xlmr {

// The typical largest |value| of each channel of a LayerNorm's output
// gamma * n + beta: 3 |gamma_c| + |beta_c|.
std::vector<float> layernorm_output_range(const float* gamma, const float* beta, int n);

// The same for y = W x + b ([rows, cols] row-major W, b: [rows] or nullptr),
// x that LayerNorm's output: channel r has mean W_r . beta + b_r and spread
// ||W_r * gamma|| (n's components taken as independent), so range
// |mean| + 3 spread; with gelu, the larger |GELU| of mean -+ 3 spread. (The
// attention's context rows are weighted averages of V rows, within V's range.)
std::vector<float> linear_output_range(const float* w, const float* b, int rows, int cols, const float* gamma,
                                       const float* beta, bool gelu);

// The per-input-channel factors s for the [out, in] matrix W behind input
// channels of the given ranges: sqrt(range_c / max_o |W[o, c]|), divided by
// their geometric mean (only ratios matter), kept within 1/1000 and 1000 of
// it, and 1 for a channel whose range or weights are all zero.
std::vector<float> int8_equalization_scales(const std::vector<float>& range, const float* w, int out, int in);

}  // namespace xlmr
