#include "engine/int8_equalize.h"

#include <algorithm>
#include <cmath>
#include <cstddef>

#include "engine/error.h"

namespace xlmr {

namespace {

double gelu(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }

}  // namespace

std::vector<float> layernorm_output_range(const float* gamma, const float* beta, int n) {
  XLMR_CHECK(gamma && beta && n >= 1, "int8 equalization: missing LayerNorm parameters");
  std::vector<float> r(static_cast<size_t>(n));
  for (int c = 0; c < n; ++c) r[size_t(c)] = 3.0f * std::fabs(gamma[c]) + std::fabs(beta[c]);
  return r;
}

std::vector<float> linear_output_range(const float* w, const float* b, int rows, int cols, const float* gamma,
                                       const float* beta, bool gelu_after) {
  XLMR_CHECK(w && gamma && beta && rows >= 1 && cols >= 1, "int8 equalization: bad linear layer");
  std::vector<float> r(static_cast<size_t>(rows));
  for (int o = 0; o < rows; ++o) {
    const float* wr = w + size_t(o) * size_t(cols);
    double mean = b ? b[o] : 0.0, var = 0.0;
    for (int c = 0; c < cols; ++c) {
      mean += double(wr[c]) * beta[c];
      const double g = double(wr[c]) * gamma[c];
      var += g * g;
    }
    const double hi = mean + 3.0 * std::sqrt(var), lo = mean - 3.0 * std::sqrt(var);
    r[size_t(o)] = float(gelu_after ? std::max(std::fabs(gelu(hi)), std::fabs(gelu(lo)))
                                    : std::max(std::fabs(hi), std::fabs(lo)));
  }
  return r;
}

std::vector<float> int8_equalization_scales(const std::vector<float>& range, const float* w, int out, int in) {
  XLMR_CHECK(w && out >= 1 && in >= 1 && range.size() == size_t(in), "int8 equalization: bad shapes");
  std::vector<double> wmax(size_t(in), 0.0);
  for (int o = 0; o < out; ++o) {
    const float* wr = w + size_t(o) * size_t(in);
    for (int c = 0; c < in; ++c) wmax[size_t(c)] = std::max(wmax[size_t(c)], double(std::fabs(wr[c])));
  }
  // log s per channel; channels with nothing to balance (or non-finite
  // inputs, which the GEMM turns into NaN results anyway) stay at the mean.
  std::vector<double> log_s(size_t(in), 0.0);
  std::vector<bool> live(size_t(in), false);
  double sum = 0.0;
  int n_live = 0;
  for (int c = 0; c < in; ++c) {
    const double a = range[size_t(c)], m = wmax[size_t(c)];
    if (!(a > 0.0 && m > 0.0 && std::isfinite(a) && std::isfinite(m))) continue;
    log_s[size_t(c)] = 0.5 * (std::log(a) - std::log(m));
    live[size_t(c)] = true;
    sum += log_s[size_t(c)];
    ++n_live;
  }
  const double mean = n_live ? sum / n_live : 0.0, limit = std::log(1000.0);
  std::vector<float> s(size_t(in), 1.0f);
  for (int c = 0; c < in; ++c) {
    if (live[size_t(c)]) s[size_t(c)] = float(std::exp(std::clamp(log_s[size_t(c)] - mean, -limit, limit)));
  }
  return s;
}

}  // namespace xlmr
