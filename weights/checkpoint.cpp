// Format detection and dispatch for source checkpoints.

#include "weights/checkpoint.h"

#include <cstring>
#include <vector>

#include "engine/error.h"
#include "weights/file_io.h"

namespace xlmr {

SourceKind sniff_checkpoint(const std::string& path) {
  detail::InputFile file(path);
  const uint64_t size = file.size();
  uint8_t head[16] = {0};
  const uint64_t n = size < sizeof(head) ? size : sizeof(head);
  file.read_at(0, head, n);

  static const uint8_t kZip[4] = {'P', 'K', 0x03, 0x04};
  static const uint8_t kLegacy[14] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c,
                                      0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
  if (n >= sizeof(kZip) && std::memcmp(head, kZip, sizeof(kZip)) == 0) return SourceKind::torch_zip;
  if (n >= sizeof(kLegacy) && std::memcmp(head, kLegacy, sizeof(kLegacy)) == 0) return SourceKind::torch_legacy;
  if (n >= 9) {
    const uint64_t header_len = detail::load_le64(head);
    if (header_len >= 2 && header_len <= size - 8 && head[8] == '{') return SourceKind::safetensors;
  }
  return SourceKind::unknown;
}

void SourceTensor::read_into(uint8_t* dst) const {
  if (!bytes) XLMR_THROW("tensor '" + detail::printable(name) + "' has no data source");
  bytes->read(dst, nbytes());
}

void SourceTensor::read(std::vector<uint8_t>* out) const {
  const uint64_t n = nbytes();
  if (out->capacity() < n) {
    // Let the old buffer go first: growing in place would hold both for a
    // moment, which for a multi-GB embedding is the peak.
    std::vector<uint8_t>().swap(*out);
    out->reserve(static_cast<size_t>(n));
  }
  out->resize(static_cast<size_t>(n));
  read_into(out->data());
}

std::vector<uint8_t> SourceTensor::read() const {
  std::vector<uint8_t> out;
  read(&out);
  return out;
}

Checkpoint read_checkpoint_file(const std::string& path) {
  switch (sniff_checkpoint(path)) {
    case SourceKind::safetensors: return read_safetensors(path);
    case SourceKind::torch_zip:
    case SourceKind::torch_legacy: return read_torch_checkpoint(path);
    case SourceKind::unknown: break;
  }
  XLMR_THROW(path + ": not a recognised checkpoint (expected safetensors, or a PyTorch .pt/.bin)");
}

}  // namespace xlmr
